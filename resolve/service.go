package resolve

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/linkhop/linkhop/internal/recjson"
)

// Service defaults.
const (
	DefaultCacheTTL       = 24 * time.Hour
	DefaultNegativeTTL    = 10 * time.Minute
	DefaultPollInterval   = 50 * time.Millisecond
	DefaultLatencySamples = 50
	DefaultLatencyEvery   = 100 * time.Millisecond
	// sharedFailureTTL is how long a failed resolve's outcome is kept for the workers that waited
	// on it. Only waiters of that very resolve (same lock token) take it, so a later retry never
	// sees an old failure.
	sharedFailureTTL = 30 * time.Second
	// latencyTTL lets a provider's measurements fade when it is no longer used.
	latencyTTL = 24 * time.Hour
	// keyPrefix prefixes every Redis key of this package.
	keyPrefix = "linkhop:resolve:"
)

// ServiceOptions configures a Service. The zero value of each field means its default.
type ServiceOptions struct {
	// CacheTTL is RESOLVE_CACHE_TTL: how long a resolved link is served from cache. Default 24h.
	CacheTTL time.Duration
	// NegativeTTL is how long a link_removed outcome is remembered. Default 10m.
	NegativeTTL time.Duration
	// LockTTL bounds how long one worker may hold a URL's upstream-resolve lock (it is released
	// as soon as the resolve ends). Default: the resolver's timeout + slot wait + 10s.
	LockTTL time.Duration
	// PollInterval is how often a worker waiting on another's resolve looks for the outcome.
	// Default 50ms.
	PollInterval time.Duration
	// LatencySamples is how many recent resolve durations are kept per provider. Default 50.
	LatencySamples int
	// LatencyEvery is the least time between two durations of one provider that this Service
	// records; the others are not recorded. Default 100ms; negative: every one.
	LatencyEvery time.Duration
}

// Service adds the shared Redis cache, the negative cache, one-upstream-resolve-per-URL across
// all workers, and provider latency stats on top of a Resolver. It is safe for concurrent use.
type Service struct {
	rdb  redis.UniversalClient
	r    *Resolver
	opts ServiceOptions
	sf   singleflight.Group
	// split makes LookupManyIn read each link with a GET of its own, as on Redis Cluster, where
	// two links' keys are in different slots; see LookupManyIn.
	split atomic.Bool
	// latencyAt holds, per provider ID, when (Unix ns) this Service last recorded a duration of
	// it (*atomic.Int64); see latencyDue.
	latencyAt sync.Map
}

// NewService returns a Service over rdb and r with opts, defaults filled in.
func NewService(rdb redis.UniversalClient, r *Resolver, opts ServiceOptions) *Service {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.LockTTL <= 0 {
		// A countdown below ParkMin (any countdown, when parking is off) is slept through with
		// the lock held.
		sleep := r.formWaitMax
		if r.parkMin > 0 {
			sleep = min(r.parkMin, r.formWaitMax)
		}
		opts.LockTTL = r.timeout + r.slotWait + sleep + 10*time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.LatencySamples <= 0 {
		opts.LatencySamples = DefaultLatencySamples
	}
	if opts.LatencyEvery == 0 {
		opts.LatencyEvery = DefaultLatencyEvery
	}
	s := &Service{rdb: rdb, r: r, opts: opts}
	_, cluster := rdb.(*redis.ClusterClient)
	s.split.Store(cluster)
	return s
}

// Resolver returns the underlying resolver.
func (s *Service) Resolver() *Resolver { return s.r }

// Record states in the cache.
const (
	stateDone    = "done"
	stateRemoved = "removed"
)

// record is a cache entry: a success or a remembered removal of one normalised URL.
type record struct {
	State      string   `json:"state"`
	URL        string   `json:"url"` // the normalised URL: guards against hash collisions
	TargetURL  string   `json:"target_url,omitempty"`
	Provider   Provider `json:"provider"`
	Hops       []Hop    `json:"hops,omitempty"`
	DurationMS int64    `json:"duration_ms,omitempty"`
	Detail     string   `json:"detail,omitempty"`
}

// sharedFailure is a failed outcome left for the workers that waited on the lock holder Token.
type sharedFailure struct {
	Token        string `json:"token"`
	Code         string `json:"code"`
	Detail       string `json:"detail"`
	Transient    bool   `json:"transient"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	Hops         []Hop  `json:"hops"`
}

// urlKeys are the Redis keys of one normalised URL. They share a hash tag, so they live in one
// Cluster slot and the finishing script may touch them together.
type urlKeys struct{ rec, lock, fail string }

func keysFor(norm string) urlKeys {
	sum := sha256.Sum256([]byte(norm))
	tag := keyPrefix + "{" + hex.EncodeToString(sum[:16]) + "}:"
	return urlKeys{rec: tag + "rec", lock: tag + "lock", fail: tag + "fail"}
}

// recKey is keysFor(norm).rec, built alone (in one allocation) for the cache reads.
func recKey(norm string) string {
	sum := sha256.Sum256([]byte(norm))
	const pre = keyPrefix + "{"
	var b [len(pre) + 32 + len("}:rec")]byte
	n := copy(b[:], pre)
	hex.Encode(b[n:], sum[:16])
	copy(b[n+32:], "}:rec")
	return string(b[:])
}

func latencyKey(providerID string) string { return keyPrefix + "lat:" + providerID }

// Lookup is the API's cache read: found=true with the cached Result, or removed=true when the
// negative cache says link_removed. Exactly one Redis round trip.
func (s *Service) Lookup(ctx context.Context, rawURL string) (res Result, found, removed bool, err error) {
	var decode func() (Result, bool, bool, error)
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		decode = s.LookupIn(ctx, p, rawURL)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Result{}, false, false, fmt.Errorf("resolve cache read: %w", err)
	}
	return decode()
}

// LookupIn queues Lookup's read on p, for callers that batch it with their own commands in one
// round trip; the returned function decodes the reply after p has been executed.
func (s *Service) LookupIn(ctx context.Context, p redis.Pipeliner, rawURL string) func() (res Result, found, removed bool, err error) {
	e, err := s.Entry(Link{Raw: rawURL})
	if err != nil {
		return func() (Result, bool, bool, error) { return Result{}, false, false, err }
	}
	cmd := p.Get(ctx, e.Key)
	return func() (Result, bool, bool, error) { return s.decodeLookup(cmd, rawURL, e.norm, e.u) }
}

// CacheEntry is the cache entry of one link, for a caller that reads it inside a script of its
// own (the API's admission of a POST /v1/resolve): Key is the Redis key LookupIn reads, and
// Decode makes of its value what LookupIn does.
type CacheEntry struct {
	Key    string
	s      *Service
	rawURL string
	norm   string
	u      *url.URL
}

// Entry returns the cache entry of link l (its URL checked, not parsed again, when l has it);
// an error for a URL that cannot be submitted.
func (s *Service) Entry(l Link) (CacheEntry, error) {
	u, err := l.checked()
	if err != nil {
		return CacheEntry{}, err
	}
	norm := normalized(u)
	return CacheEntry{Key: recKey(norm), s: s, rawURL: l.Raw, norm: norm, u: u}, nil
}

// Decode reads the entry's value as LookupIn does: found with the cached Result, removed when
// the negative cache says link_removed, neither for a value it cannot use (unreadable, or
// another link's: a miss).
func (e CacheEntry) Decode(raw []byte) (res Result, found, removed bool) {
	res, found, removed, _ = e.s.fromRecord(raw, e.rawURL, e.norm, e.u)
	return res, found, removed
}

// Link is one link of LookupManyIn: the text submitted and, when the caller parsed it already,
// url.Parse's URL of that text, which is then checked but not parsed again.
type Link struct {
	Raw string
	URL *url.URL
}

// checked is l's URL: parsed from Raw, or the caller's, checked as a submitted URL is.
func (l Link) checked() (*url.URL, error) {
	if l.URL == nil {
		return parseSubmitted(l.Raw)
	}
	return l.URL, checkParsed(l.Raw, l.URL)
}

// LookupManyIn queues the cache reads of links on p, as LookupIn does for one, and returns a
// function that decodes the read of links[i] after p has run. On a single Redis or through
// Sentinel the reads are one MGET, which Redis serves for about the cost of one GET plus the
// lookups; on Redis Cluster, where the keys of two links are in different slots, a GET each.
// A server that turns out to be a Cluster node (CROSSSLOT) is read again with GETs in a round
// trip of their own, and from then on with GETs.
func (s *Service) LookupManyIn(ctx context.Context, p redis.Pipeliner, links []Link) func(i int) (res Result, found, removed bool, err error) {
	type parsed struct {
		u    *url.URL
		norm string
		err  error
	}
	ls := make([]parsed, len(links))
	ks := make([]string, 0, len(links))
	at := make([]int, len(links)) // index of each link's key in ks, -1 when it is not fetchable
	for i, l := range links {
		u, err := l.checked()
		if err != nil {
			ls[i].err, at[i] = err, -1
			continue
		}
		ls[i] = parsed{u: u, norm: normalized(u)}
		at[i] = len(ks)
		ks = append(ks, recKey(ls[i].norm))
	}
	get := func(p redis.Pipeliner) []*redis.StringCmd {
		cmds := make([]*redis.StringCmd, len(ks))
		for j, k := range ks {
			cmds[j] = p.Get(ctx, k)
		}
		return cmds
	}
	var (
		gets []*redis.StringCmd
		mget *redis.SliceCmd
	)
	if s.split.Load() || len(ks) < 2 {
		gets = get(p)
	} else if len(ks) > 0 {
		mget = p.MGet(ctx, ks...)
	}
	var vals []any
	var readErr error
	read := func() {
		if mget == nil {
			return
		}
		m := mget
		mget = nil
		vals, readErr = m.Result()
		if readErr != nil && strings.HasPrefix(readErr.Error(), "CROSSSLOT") {
			s.split.Store(true)
			_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				gets = get(p)
				return nil
			})
			vals, readErr = nil, nil
		}
		if readErr == nil && gets == nil && len(vals) != len(ks) {
			readErr = fmt.Errorf("MGET answered %d values for %d keys", len(vals), len(ks))
		}
	}
	return func(i int) (Result, bool, bool, error) {
		l := ls[i]
		if l.err != nil {
			return Result{}, false, false, l.err
		}
		read()
		if gets != nil {
			return s.decodeLookup(gets[at[i]], links[i].Raw, l.norm, l.u)
		}
		if readErr != nil {
			return Result{}, false, false, fmt.Errorf("resolve cache read: %w", readErr)
		}
		v, ok := vals[at[i]].(string)
		if !ok {
			return Result{}, false, false, nil // nil: a miss (MGET answers nil for a key of another type too)
		}
		return s.fromRecord([]byte(v), links[i].Raw, l.norm, l.u)
	}
}

func (s *Service) fromRecord(raw []byte, rawURL, norm string, u *url.URL) (Result, bool, bool, error) {
	var rec record
	if err := recjson.Unmarshal(raw, &rec); err != nil || rec.URL != norm {
		return Result{}, false, false, nil // unreadable or a hash collision: a miss
	}
	switch rec.State {
	case stateRemoved:
		return Result{}, false, true, nil
	case stateDone:
		prov := rec.Provider
		if p, ok := s.r.registry.Lookup(u.Host); ok {
			prov = p // labels and tiers as configured now
		}
		return Result{
			URL: rawURL, TargetURL: rec.TargetURL, Provider: prov, Hops: rec.Hops,
			Cached: true, Duration: time.Duration(rec.DurationMS) * time.Millisecond,
		}, true, false, nil
	}
	return Result{}, false, false, nil
}

// Resolve is cache → one upstream resolve per URL (singleflight in process, a Redis lock across
// workers) → resolver → cache. Waiters take the lock holder's outcome. A failure is an *Error
// (link_removed from the negative cache too), or a plain error when Redis fails. A long
// countdown returns a *Parked (see Resolver.Park): the caller reschedules and calls Resume.
func (s *Service) Resolve(ctx context.Context, rawURL string) (Result, error) {
	norm, res, done, err := s.fromCache(ctx, rawURL)
	if done {
		return res, err
	}
	ch := s.sf.DoChan(norm, func() (any, error) {
		// Detached from this caller: other callers share the outcome. The resolver's own
		// timeout and the lock TTL bound it.
		return s.shared(context.WithoutCancel(ctx), rawURL, norm)
	})
	select {
	case out := <-ch:
		if out.Err != nil {
			var re *Error
			if errors.As(out.Err, &re) {
				return Result{}, re.clone()
			}
			if p, ok := IsParked(out.Err); ok && out.Shared {
				// One session cannot be resumed by two jobs (its form token is single-use): the
				// callers that shared it come back after the countdown, when the first one's
				// outcome is in the cache.
				return Result{}, &Error{Code: CodeProviderDown, Transient: true, Throttled: true, Cause: ErrProviderBusy,
					Detail:     "waiting on another job's countdown for the same link",
					RetryAfter: time.Until(p.Until) + s.opts.PollInterval, Hops: []Hop{{URL: rawURL, Kind: KindStart}}}
			}
			return Result{}, out.Err
		}
		res := out.Val.(Result)
		res.URL = rawURL
		res.Hops = cloneHops(res.Hops)
		if out.Shared {
			res.Cached = true
		}
		return res, nil
	case <-ctx.Done():
		return Result{}, cancelled(ctx.Err())
	}
}

func removedError(rawURL string) *Error {
	return &Error{Code: CodeLinkRemoved, Detail: "the provider reported this link removed (remembered from a recent resolve)",
		Hops: []Hop{{URL: rawURL, Kind: KindStart}}}
}

// LockHolder names the worker process that holds a URL's upstream lock, and tells whether
// the process named in another's lock still lives. Without one (no WithLockHolder), a lock
// whose holder died is waited out until its TTL; with one, a waiter takes it over as soon as
// its holder is known dead, so a killed worker's resolve does not hold up the same link's
// next resolve (docs/reliability.md#recovery-times-and-why).
type LockHolder interface {
	// ID names this process; it never contains '@'.
	ID() string
	// Alive reports whether the process named id still lives.
	Alive(ctx context.Context, id string) (bool, error)
}

type lockHolderKey struct{}

// WithLockHolder returns ctx carrying h: resolves made with it take upstream locks in h's name
// and take over locks of dead holders.
func WithLockHolder(ctx context.Context, h LockHolder) context.Context {
	return context.WithValue(ctx, lockHolderKey{}, h)
}

func lockHolderOf(ctx context.Context) LockHolder {
	h, _ := ctx.Value(lockHolderKey{}).(LockHolder)
	return h
}

// holderCheckEvery is how often a waiter asks whether the lock's holder still lives: the
// takeover comes at most this late, for one cheap Redis call per interval.
const holderCheckEvery = 500 * time.Millisecond

// takeoverScript replaces a dead holder's lock value with ours, if it is still the same.
// KEYS[1] lock; ARGV[1] the dead holder's value, ARGV[2] ours, ARGV[3] TTL ms.
var takeoverScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
  return 1
end
return 0`)

// shared runs one resolve of norm across all workers: whoever takes the lock resolves, the
// others wait for its outcome.
func (s *Service) shared(ctx context.Context, rawURL, norm string) (Result, error) {
	k := keysFor(norm)
	token := s.lockToken(ctx)
	for {
		ok, err := s.rdb.SetNX(ctx, k.lock, token, s.opts.LockTTL).Result()
		if err != nil {
			return Result{}, fmt.Errorf("resolve lock: %w", err)
		}
		if ok {
			return s.lead(ctx, rawURL, norm, k, token)
		}
		holder, err := s.rdb.Get(ctx, k.lock).Result()
		if errors.Is(err, redis.Nil) {
			continue // released in between: try again
		}
		if err != nil {
			return Result{}, fmt.Errorf("resolve lock: %w", err)
		}
		res, err, done := s.wait(ctx, rawURL, norm, k, holder, token)
		if done {
			return res, err
		}
	}
}

// LoadScripts has Redis learn the script that publishes an upstream outcome, which a worker's
// runs send by its SHA in their pipelines (jobs.LoadScripts).
func LoadScripts(ctx context.Context, rdb redis.Scripter) error {
	if err := finishScript.Load(ctx, rdb).Err(); err != nil {
		return fmt.Errorf("resolve: loading scripts: %w", err)
	}
	return nil
}

// finishScript stores the outcome (if any) and then releases the lock if still ours, in that
// order, so a waiter that sees the lock gone also sees the outcome.
var finishScript = redis.NewScript(`
if ARGV[2] ~= "" then
  redis.call("SET", KEYS[2], ARGV[2], "PX", ARGV[3])
end
if redis.call("GET", KEYS[1]) == ARGV[1] then
  redis.call("DEL", KEYS[1])
end
return 1`)

// lead resolves upstream while holding the lock and publishes the outcome.
func (s *Service) lead(ctx context.Context, rawURL, norm string, k urlKeys, token string) (Result, error) {
	res, rerr := s.r.Park(ctx, rawURL)
	return res, s.publish(ctx, norm, k, token, res, rerr)
}

// fromCache checks rawURL and answers it from the cache when it can: done=true with the
// cached result, the remembered removal, or the error (a refused URL, Redis failing). Else it
// returns the URL's normalised form for the upstream resolve.
func (s *Service) fromCache(ctx context.Context, rawURL string) (norm string, res Result, done bool, err error) {
	u, _, _, cerr := s.r.checkSubmitted(rawURL)
	if cerr != nil {
		return "", Result{}, true, cerr
	}
	res, found, removed, err := s.Lookup(ctx, rawURL)
	switch {
	case err != nil:
		return "", Result{}, true, err
	case found:
		return "", res, true, nil
	case removed:
		return "", Result{}, true, removedError(rawURL)
	}
	return normalized(u), Result{}, false, nil
}

// Resume finishes a resolve that Resolve parked, and caches its outcome like Resolve's. A
// result another job cached meanwhile is taken as it is.
func (s *Service) Resume(ctx context.Context, rawURL string, c *Continuation) (Result, error) {
	norm, res, done, err := s.fromCache(ctx, rawURL)
	if done {
		return res, err
	}
	res, rerr := s.r.Resume(ctx, rawURL, c)
	// No lock is held (the token matches none), so publishing only stores the outcome.
	return res, s.publish(ctx, norm, keysFor(norm), newToken(), res, rerr)
}

// publish stores the outcome of one upstream resolve for every worker (the cache, the negative
// cache, or a failure for this lock holder's waiters) and releases the lock if token holds it.
// It returns rerr, the outcome itself, for the caller.
func (s *Service) publish(ctx context.Context, norm string, k urlKeys, token string, res Result, rerr error) error {
	// The outcome is written even when the caller has gone: other workers wait for it.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Best effort: if Redis fails here the result is still good for this caller, and waiters
	// take over when the lock expires.
	var again func()
	_, _ = s.rdb.Pipelined(wctx, func(p redis.Pipeliner) error {
		again = s.publishIn(wctx, p, norm, k, token, res, rerr)
		return nil
	})
	again()
	return rerr
}

// publishIn adds publish's writes to p: the outcome, the lock's release (finishScript, which
// stores before it releases, so a waiter that sees the lock gone also sees the outcome) and
// the provider's latency. The function returned is to be called once p has run: it runs
// finishScript again, alone, when Redis did not know it (its first use, or after a restart),
// since it rides in p by EVALSHA (takeScript in package jobs says why not EVAL).
func (s *Service) publishIn(ctx context.Context, p redis.Pipeliner, norm string, k urlKeys, token string, res Result, rerr error) (again func()) {
	outKey, val, ttl := "", []byte(nil), time.Duration(0)
	var re *Error
	switch {
	case rerr == nil:
		rec := record{State: stateDone, URL: norm, TargetURL: res.TargetURL, Provider: res.Provider, Hops: res.Hops, DurationMS: res.Duration.Milliseconds()}
		outKey, ttl = k.rec, s.opts.CacheTTL
		val, _ = recjson.Marshal(rec)
	case errors.As(rerr, &re) && re.Code == CodeLinkRemoved:
		outKey, ttl = k.rec, s.opts.NegativeTTL
		val, _ = recjson.Marshal(record{State: stateRemoved, URL: norm, Detail: re.Detail})
	case errors.As(rerr, &re) && !re.Throttled:
		// Throttled means this process had no free slot; other workers may have one, so they
		// are not told to fail.
		outKey, ttl = k.fail, sharedFailureTTL
		val, _ = recjson.Marshal(sharedFailure{Token: token, Code: re.Code, Detail: re.Detail, Transient: re.Transient,
			RetryAfterMS: re.RetryAfter.Milliseconds(), Hops: re.Hops})
	}
	ks, args := []string{k.lock, cacheKeyOr(outKey, k.lock)}, []any{token, string(val), ttl.Milliseconds()}
	cmd := finishScript.EvalSha(ctx, p, ks, args...)
	if rerr == nil && res.Provider.ID != "" {
		s.recordLatencyIn(ctx, p, res.Provider.ID, res.Duration)
	}
	return func() {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// Best effort, as the pipeline was.
			_ = finishScript.Eval(ctx, s.rdb, ks, args...).Err()
		}
	}
}

// cacheKeyOr returns key, or fallback when key is empty (scripts need a key in the slot anyway).
func cacheKeyOr(key, fallback string) string {
	if key == "" {
		return fallback
	}
	return key
}

// wait polls for the outcome of holder's resolve. done=false means the lock was released or
// lost without an outcome for us, and the caller should try to take the lock itself. When
// the holder's process is known dead, the lock is taken over with token and the resolve led
// from here.
func (s *Service) wait(ctx context.Context, rawURL, norm string, k urlKeys, holder, token string) (Result, error, bool) {
	u, _ := url.Parse(rawURL)
	t := time.NewTicker(s.opts.PollInterval)
	defer t.Stop()
	giveUp := time.NewTimer(s.opts.LockTTL + time.Second)
	defer giveUp.Stop()
	var checked time.Time
	for {
		if took, err := s.takeOver(ctx, k, holder, token, &checked); err != nil {
			return Result{}, err, true
		} else if took {
			res, err := s.lead(ctx, rawURL, norm, k, token)
			return res, err, true
		}
		select {
		case <-t.C:
		case <-giveUp.C:
			return Result{}, nil, false
		case <-ctx.Done():
			return Result{}, cancelled(ctx.Err()), true
		}
		var rec, fail, lock *redis.StringCmd
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			rec, fail, lock = p.Get(ctx, k.rec), p.Get(ctx, k.fail), p.Get(ctx, k.lock)
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return Result{}, fmt.Errorf("resolve wait: %w", err), true
		}
		if b, err := rec.Bytes(); err == nil {
			res, found, removed, _ := s.fromRecord(b, rawURL, norm, u)
			if found {
				return res, nil, true
			}
			if removed {
				return Result{}, removedError(rawURL), true
			}
		}
		if b, err := fail.Bytes(); err == nil {
			var f sharedFailure
			if recjson.Unmarshal(b, &f) == nil && f.Token == holder {
				return Result{}, &Error{Code: f.Code, Detail: f.Detail, Transient: f.Transient,
					RetryAfter: time.Duration(f.RetryAfterMS) * time.Millisecond, Hops: f.Hops}, true
			}
		}
		if cur, err := lock.Result(); err != nil || cur != holder {
			return Result{}, nil, false
		}
	}
}

// takeOver takes the lock from holder if holder's process is dead, asking at most every
// holderCheckEvery (last is when it last asked). Locks without a holder's name (taken without
// a LockHolder) are never taken over: they are waited out.
func (s *Service) takeOver(ctx context.Context, k urlKeys, holder, token string, last *time.Time) (bool, error) {
	h := lockHolderOf(ctx)
	_, id, named := strings.Cut(holder, "@")
	if h == nil || !named || time.Since(*last) < holderCheckEvery {
		return false, nil
	}
	*last = time.Now()
	alive, err := h.Alive(ctx, id)
	if err != nil {
		return false, fmt.Errorf("resolve lock: %w", err)
	}
	if alive {
		return false, nil
	}
	n, err := takeoverScript.Run(ctx, s.rdb, []string{k.lock}, holder, token, s.opts.LockTTL.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("resolve lock: %w", err)
	}
	return n == 1, nil
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// recordLatencyIn adds to p the keeping of the provider's recent resolve durations, when one is
// due (latencyDue).
func (s *Service) recordLatencyIn(ctx context.Context, p redis.Pipeliner, providerID string, d time.Duration) {
	if !s.latencyDue(providerID, time.Now()) {
		return
	}
	k := latencyKey(providerID)
	p.LPush(ctx, k, d.Milliseconds())
	p.LTrim(ctx, k, 0, int64(s.opts.LatencySamples-1))
	p.Expire(ctx, k, latencyTTL)
}

// latencyDue reports whether a duration of providerID is to be recorded at now, and if so takes
// the turn: at most one every LatencyEvery per Service. A provider's durations are one list, a
// single Redis key (on one node of a Cluster), which every job of a busy provider would
// otherwise write with three commands; ten samples a second per worker keep its 50 recent
// (docs/resolving.md) as fresh as a median shown as "~350ms" needs.
func (s *Service) latencyDue(providerID string, now time.Time) bool {
	if s.opts.LatencyEvery < 0 {
		return true
	}
	v, ok := s.latencyAt.Load(providerID)
	if !ok {
		v, _ = s.latencyAt.LoadOrStore(providerID, new(atomic.Int64))
	}
	at := v.(*atomic.Int64)
	last, ns := at.Load(), now.UnixNano()
	return ns-last >= int64(s.opts.LatencyEvery) && at.CompareAndSwap(last, ns)
}

// Latencies returns, per provider ID, the median duration of its recent resolves; providers
// without measurements are absent.
func (s *Service) Latencies(ctx context.Context) (map[string]time.Duration, error) {
	provs := s.r.registry.All()
	cmds := make([]*redis.StringSliceCmd, len(provs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pr := range provs {
			cmds[i] = p.LRange(ctx, latencyKey(pr.ID), 0, -1)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading provider latencies: %w", err)
	}
	out := map[string]time.Duration{}
	for i, pr := range provs {
		var ms []int64
		for _, v := range cmds[i].Val() {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				ms = append(ms, n)
			}
		}
		if len(ms) == 0 {
			continue
		}
		slices.Sort(ms)
		m := ms[len(ms)/2]
		if len(ms)%2 == 0 {
			m = (ms[len(ms)/2-1] + ms[len(ms)/2]) / 2
		}
		out[pr.ID] = time.Duration(m) * time.Millisecond
	}
	return out, nil
}

// Providers returns the registry's providers with Latency filled from Latencies where measured:
// the body of GET /v1/providers.
func (s *Service) Providers(ctx context.Context) ([]Provider, error) {
	lat, err := s.Latencies(ctx)
	if err != nil {
		return nil, err
	}
	provs := s.r.registry.All()
	for i := range provs {
		if d, ok := lat[provs[i].ID]; ok {
			provs[i].Latency = FormatLatency(d)
		}
	}
	return provs, nil
}

// FormatLatency renders a duration the way provider latencies are shown: "~350ms", "~1.5s",
// "~12s", "~2m".
func FormatLatency(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("~%dms", max(d.Round(10*time.Millisecond).Milliseconds(), 1))
	case d < 10*time.Second:
		s := strconv.FormatFloat(d.Round(100*time.Millisecond).Seconds(), 'f', -1, 64)
		return "~" + s + "s"
	case d < 2*time.Minute:
		return fmt.Sprintf("~%ds", int64(d.Round(time.Second).Seconds()))
	default:
		return fmt.Sprintf("~%dm", int64(d.Round(time.Minute).Minutes()))
	}
}
