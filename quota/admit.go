package quota

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/keys"
)

// admitLua is the admission, the Lua function admit(after): it authenticates an API key and
// admits its request in one step: it reads the key record, compares the token digest, and runs
// the limiter with the limits the record holds right now (so `api keys update` and `revoke` act
// on the very next request). With after (a ThenScript's continuation), an admitted request then
// runs after(K, A, f) in the same step. Keys of the API key that a request reads (a job record,
// for a poll) are not read here but by a plain GET or MGET beside the script in the same
// pipeline (AdmitIn): a value read in Lua becomes a Lua string, which Redis's Lua hashes byte
// by byte, and goes back into the reply, which cost a poll more than the GET itself.
//
// KEYS: the key record (keys.RecordKey, read through the field names keys.Script gives), the log,
// the day counter, then the continuation's keys (K).
// ARGV: token digest, window µs, member, "1" when the request counts against the daily quota,
// fixed time ("" in production), then which record fields to read: "0" for the whole record,
// "R" for keys.RequestFields, which the script holds itself (Redis turns every argument into a
// Lua string, and six names cost the script more than the HMGET they name), or a count n
// followed by n names (AdmitRequest.Fields); then the continuation's arguments (A).
//
// Reply: {0} when authentication failed (nothing recorded), else
// {1, record (flat HGETALL, or with field names the HMGET of them), allowed, code, now, count,
// free, used, today}, and then, when the continuation ran, its reply, or false and the error it
// raised (the admission stands; the continuation's own writes are its to order).
//
// The digests are compared in Lua with plain equality: both are SHA-256 of secrets, so the
// timing of a mismatch reveals nothing about a key; Go compares them again in constant time.
var admitLua = keys.Script(`
local function admit(after)
local rec, f, names, na = nil, {}, nil, 7
if ARGV[6] == 'R' then
  names = request_fields
elseif ARGV[6] ~= '0' then
  local n = tonumber(ARGV[6])
  names, na = {unpack(ARGV, 7, 6 + n)}, 7 + n
end
if names then
  rec = redis.call('HMGET', KEYS[1], unpack(names))
  for i = 1, #names do
    if rec[i] then f[names[i]] = rec[i] end
  end
else
  rec = redis.call('HGETALL', KEYS[1])
  for i = 1, #rec, 2 do f[rec[i]] = rec[i + 1] end
end
if f[{{.Hash}}] == nil or f[{{.Hash}}] ~= ARGV[1] or f[{{.RevokedAt}}] ~= nil then return {0} end
local limit = 0
if f[{{.RateLimit}}] then limit = f[{{.RateLimit}}] + 0 end
local quota = -1
if f[{{.DailyQuota}}] ~= nil then quota = f[{{.DailyQuota}}] + 0 end
local r = check(KEYS[2], KEYS[3], limit, ARGV[2] + 0, ARGV[3], quota, ARGV[4] == '1', ARGV[5])
local out, oerr = nil, nil
if after and r[1] == 1 then
  local ok, v = pcall(after, {unpack(KEYS, 4)}, {unpack(ARGV, na)}, f)
  if ok then
    out = v
  else
    -- redis.call raises a table {err = message}; Lua itself raises a string.
    if type(v) == 'table' then v = v.err end
    out, oerr = false, tostring(v)
  end
end
return {1, rec, r[1], r[2], r[3], r[4], r[5], r[6], r[7], out, oerr}
end
`)

// admitScript is the admission alone (admitLua without a continuation).
var admitScript = redis.NewScript(limiterLua + requestFieldsLua + admitLua + "return admit(nil)\n")

// ThenScript is the admission script followed by a continuation: the caller's Lua, run in the
// same atomic step only for a request that is authenticated and admitted (NewThen).
type ThenScript struct{ s *redis.Script }

var (
	thensMu sync.Mutex
	thens   []*ThenScript // every ThenScript made, for LoadScripts
)

// NewThen builds, once (at the caller's package initialisation), the admission script with the
// continuation lua, which defines the Lua function after_admit(K, A, f): K and A are the
// continuation's own keys and arguments (ThenCall), as Lua lists, f the key record's fields
// as read (a map of the fields present; keys.RequestFields with AdmitRequest.Fields so set).
// Its reply is Admission.Then. It runs after the admission's writes: an error it raises is
// reported in Admission.ThenErr and leaves the admission standing, and its own writes made
// before the error stay, so it checks everything before it writes. Its keys must be in the
// key record's slot on Redis Cluster, else the call is refused with CROSSSLOT before anything
// runs.
func NewThen(lua string) *ThenScript {
	t := &ThenScript{s: redis.NewScript(limiterLua + requestFieldsLua + admitLua + lua + "\nreturn admit(after_admit)\n")}
	thensMu.Lock()
	thens = append(thens, t)
	thensMu.Unlock()
	return t
}

// ThenCall is a continuation to run in an admission (AdmitRequest.Then).
type ThenCall struct {
	Script *ThenScript
	Keys   []string // K: after the admission's own keys
	Args   []any    // A: after the admission's own arguments
}

// requestFieldsLua defines request_fields, the Lua list of keys.RequestFields.
var requestFieldsLua = func() string {
	q := make([]string, len(keys.RequestFields))
	for i, f := range keys.RequestFields {
		if strings.ContainsAny(f, "'\\") {
			panic("quota: a record field name needs quoting: " + f)
		}
		q[i] = "'" + f + "'"
	}
	return "local request_fields = {" + strings.Join(q, ", ") + "}\n"
}()

// AdmitRequest is one request to authenticate and admit.
type AdmitRequest struct {
	// KeyID is the id the bearer token names; RecordKey the Redis key of its record.
	KeyID, RecordKey string
	// Digest is the hex SHA-256 of the bearer token, compared with the record's keys.FieldHash.
	Digest string
	// CountDay: the request counts against the daily quota.
	CountDay bool
	// Fetch, when set, is a key of the same API key (same hash tag) read in the same round trip,
	// by a GET beside the admission script; its value is reported only for an authenticated
	// request.
	Fetch string
	// FetchMany, when not empty (and Fetch is not set), are keys of the same API key read in
	// the same round trip by one MGET beside the script, as Fetch is.
	FetchMany []string
	// Fields, when set, are the only fields of the key record to read and return in
	// Admission.Record (keys.RequestFields: a request that neither shows nor changes its key
	// needs no more, and the whole record, secrets included, is several times the reply). They
	// must include what the script reads: keys.FieldHash, FieldRevokedAt, FieldRateLimit and
	// FieldDailyQuota.
	Fields []string
	// Then, when set, runs a continuation in the same step once the request is authenticated
	// and admitted.
	Then *ThenCall
}

// Admission is the outcome of Admit.
type Admission struct {
	// Authenticated is false when the token did not match a live key; nothing was recorded.
	Authenticated bool
	// Record is the key record (HGETALL) when authenticated; only AdmitRequest.Fields of it,
	// those present, when they were given.
	Record map[string]string
	// Fetched is the value of AdmitRequest.Fetch when authenticated, nil when absent or not
	// asked.
	Fetched []byte
	// FetchedMany are the values of AdmitRequest.FetchMany when authenticated, in order, nil
	// for an absent key.
	FetchedMany [][]byte
	// Decision is the limiter's decision when authenticated.
	Decision Decision
	// Granted is, for AdmitManyIn, how many of the requests were admitted: the first ones.
	Granted int
	// Then is the reply of AdmitRequest.Then's continuation, nil when it did not run (the
	// request was not authenticated or not admitted) or failed.
	Then any
	// ThenErr is the error the continuation raised in Redis; the admission stands.
	ThenErr error
}

// AdmitIn queues the admission of r on p, so the caller can batch it with commands of its own
// (one round trip for all). After p ran, the returned function decodes the reply; it reports
// ErrNoScript when Redis did not know the script yet, and then the caller loads it with
// LoadScripts and runs its batch again (nothing was executed by the script).
func (l *Limiter) AdmitIn(ctx context.Context, p redis.Pipeliner, r AdmitRequest) func() (Admission, error) {
	member := l.prefix + strconv.FormatUint(l.seq.Add(1), 36)
	lk, dk := logKey(r.KeyID), dayKey(r.KeyID)
	ks := []string{r.RecordKey, lk, dk}
	fixed := ""
	if l.fixedNow != nil {
		fixed = strconv.FormatInt(l.fixedNow().UnixMicro(), 10)
	}
	cd := "0"
	if r.CountDay {
		cd = "1"
	}
	args := make([]any, 0, 7+len(r.Fields))
	args = append(args, r.Digest, l.window.Microseconds(), member, cd, fixed)
	switch {
	case len(r.Fields) == 0:
		args = append(args, "0")
	case slices.Equal(r.Fields, keys.RequestFields):
		args = append(args, "R")
	default:
		args = append(args, len(r.Fields))
		for _, f := range r.Fields {
			args = append(args, f)
		}
	}
	script := admitScript
	if r.Then != nil {
		script = r.Then.Script.s
		ks = append(ks, r.Then.Keys...)
		args = append(args, r.Then.Args...)
	}
	cmd := script.EvalSha(ctx, p, ks, args...)
	// The reads go beside the script, in the same round trip; a request that fails to
	// authenticate is told nothing of what they read.
	var (
		get  *redis.StringCmd
		mget *redis.SliceCmd
	)
	switch {
	case r.Fetch != "":
		get = p.Get(ctx, r.Fetch)
	case len(r.FetchMany) > 0:
		mget = p.MGet(ctx, r.FetchMany...)
	}
	return func() (Admission, error) {
		v, err := cmd.Slice()
		if err != nil {
			return Admission{}, scriptError("admit", err)
		}
		if len(v) == 1 {
			return Admission{}, nil
		}
		if len(v) < 9 || len(v) > 11 {
			return Admission{}, fmt.Errorf("%w: %d values from the admit script", ErrUnexpectedReply, len(v))
		}
		a := Admission{Authenticated: true}
		switch len(v) {
		case 10:
			a.Then = v[9]
		case 11:
			msg, _ := v[10].(string)
			a.ThenErr = fmt.Errorf("quota: the admission's continuation: %s", msg)
		}
		if len(r.Fields) > 0 {
			a.Record = fieldsOf(r.Fields, v[1])
		} else {
			a.Record = recordOf(v[1])
		}
		if a.Fetched, a.FetchedMany, err = fetched(get, mget); err != nil {
			return Admission{}, err
		}
		res := make([]int64, 7)
		for i := range res {
			n, ok := v[2+i].(int64)
			if !ok {
				return Admission{}, fmt.Errorf("%w: non-integer from the admit script", ErrUnexpectedReply)
			}
			res[i] = n
		}
		lim := Limits{DailyQuota: -1}
		lim.PerMinute, _ = strconv.Atoi(a.Record[keys.FieldRateLimit])
		if q, ok := a.Record[keys.FieldDailyQuota]; ok {
			lim.DailyQuota, _ = strconv.ParseInt(q, 10, 64)
		}
		a.Decision, err = l.decide(res, lim, r.CountDay, member, lk, dk, time.Now())
		return a, err
	}
}

// fetched reads the values of an admission's GET or MGET (nil for an absent key).
func fetched(get *redis.StringCmd, mget *redis.SliceCmd) ([]byte, [][]byte, error) {
	switch {
	case get != nil:
		b, err := get.Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("quota: admit: reading %s: %w", get.Args()[1], err)
		}
		return b, nil, nil
	case mget != nil:
		vs, err := mget.Result()
		if err != nil {
			return nil, nil, fmt.Errorf("quota: admit: reading %d keys: %w", len(mget.Args())-1, err)
		}
		many := make([][]byte, len(vs))
		for i, e := range vs {
			if s, ok := e.(string); ok {
				many[i] = []byte(s)
			}
		}
		return nil, many, nil
	}
	return nil, nil, nil
}

// Admit is AdmitIn on its own: one round trip (two the first time Redis sees the script).
func (l *Limiter) Admit(ctx context.Context, r AdmitRequest) (Admission, error) {
	for range 2 {
		var decode func() (Admission, error)
		_, _ = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			decode = l.AdmitIn(ctx, p, r)
			return nil
		})
		a, err := decode()
		if !errors.Is(err, ErrNoScript) {
			return a, err
		}
		if err := l.LoadScripts(ctx); err != nil {
			return Admission{}, err
		}
	}
	return Admission{}, fmt.Errorf("quota: admit: %w", ErrNoScript)
}

// LoadScripts loads the admit scripts into Redis, those with a continuation (NewThen) too
// (after ErrNoScript: first use, or a restarted Redis that lost its script cache).
func (l *Limiter) LoadScripts(ctx context.Context) error {
	all := []*redis.Script{admitScript, admitManyScript}
	thensMu.Lock()
	for _, t := range thens {
		all = append(all, t.s)
	}
	thensMu.Unlock()
	for _, s := range all {
		if err := s.Load(ctx, l.rdb).Err(); err != nil {
			return fmt.Errorf("quota: loading scripts: %w", err)
		}
	}
	return nil
}

// scriptError is the error of an admission script's call: ErrNoScript when Redis does not know
// the script yet (the caller loads it and retries), else the failure wrapped with what failed.
func scriptError(what string, err error) error {
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		return ErrNoScript
	}
	return fmt.Errorf("quota: %s: %w", what, err)
}

// recordOf reads the key record an admission script returns as HGETALL's flat list.
func recordOf(v any) map[string]string {
	flat, _ := v.([]any)
	rec := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		val, _ := flat[i+1].(string)
		rec[k] = val
	}
	return rec
}

// fieldsOf reads the fields an admission script returns as HMGET's list (nil for an absent
// field, left out of the map).
func fieldsOf(names []string, v any) map[string]string {
	vals, _ := v.([]any)
	rec := make(map[string]string, len(names))
	for i, name := range names {
		if i < len(vals) {
			if s, ok := vals[i].(string); ok {
				rec[name] = s
			}
		}
	}
	return rec
}
