package quota

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/keys"
)

// admitManyScript authenticates an API key and admits up to n requests of it at once, for a
// batch whose items each count as one request (docs/api.md#post-v1resolvebatch). The rolling
// window takes the first min(n, free slots) of them, in order, all at the same Redis time;
// the rest are refused. The daily quota is only read here: which items count against it is
// known only after the cache lookups and idempotency claims, so the job-creating script takes
// the units (DayLua) in item order, in the same step as the jobs.
//
// KEYS: the key record, the log, the day counter. ARGV: token digest, window µs, fixed time
// ("" in production), then one log member per request asked for.
//
// Reply: {0} when authentication failed, else {1, record (flat HGETALL), granted, now, count,
// free, day_used, today}: count and free as the single check reports them after the batch,
// day_used -1 when the key has no quota.
//
// With n = 0 (a batch of only invalid items) nothing is recorded, and granted is 1 when a slot
// is free: such a batch is refused as a whole only when the key could not make any request.
var admitManyScript = redis.NewScript(keys.Script(`
local rec = redis.call('HGETALL', KEYS[1])
local f = {}
for i = 1, #rec, 2 do f[rec[i]] = rec[i + 1] end
if f[{{.Hash}}] == nil or f[{{.Hash}}] ~= ARGV[1] or f[{{.RevokedAt}}] ~= nil then return {0} end
local limit = 0
if f[{{.RateLimit}}] then limit = f[{{.RateLimit}}] + 0 end
local quota = -1
if f[{{.DailyQuota}}] ~= nil then quota = f[{{.DailyQuota}}] + 0 end
local win = ARGV[2] + 0
local now, sec
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
  sec = math.floor(now / 1000000)
else
  local t = redis.call('TIME')
  sec = t[1] + 0
  now = sec * 1000000 + t[2]
end
local today = math.floor(sec / 86400)
local n = #ARGV - 3

local count = 0
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now - win))
  count = redis.call('ZCARD', KEYS[2])
end
local granted = n
if limit > 0 then granted = math.max(0, math.min(n, limit - count)) end
if n == 0 and (limit <= 0 or count < limit) then granted = 1 end
if limit > 0 and n > 0 and granted > 0 then
  local score = string.format('%d', now)
  local args = {}
  for i = 1, granted do
    args[#args + 1] = score
    args[#args + 1] = ARGV[3 + i]
  end
  redis.call('ZADD', KEYS[2], unpack(args))
  redis.call('PEXPIRE', KEYS[2], string.format('%d', math.ceil(win / 1000)))
  count = count + granted
end

local free = 0
if limit > 0 then
  if count == 0 then
    free = now + win
  else
    local i = count - limit
    if i < 0 then i = 0 end
    local is = '0'
    if i > 0 then is = string.format('%d', i) end
    local e = redis.call('ZRANGE', KEYS[2], is, is, 'WITHSCORES')
    free = e[2] + win
  end
end
local used = -1
if quota >= 0 then
  used = 0
  local h = redis.call('HMGET', KEYS[3], 'd', 'n')
  if h[1] and h[1] + 0 == today then used = (h[2] or 0) + 0 end
end
return {1, rec, granted, now, count, free, used, today}
`))

// batchRefundScript gives back what a batch took and did not keep: log members (ARGV[3…]) and
// units of the day counter (ARGV[2] of them, when it still counts day ARGV[1]).
var batchRefundScript = redis.NewScript(`
for i = 3, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
local units = tonumber(ARGV[2])
if ARGV[1] ~= '' and units > 0 then
  local h = redis.call('HMGET', KEYS[2], 'd', 'n')
  local n = tonumber(h[2])
  if tonumber(h[1]) == tonumber(ARGV[1]) and n and n > 0 then
    redis.call('HINCRBY', KEYS[2], 'n', -math.min(n, units))
  end
end
return 0
`)

// DayLua defines the daily-quota counter's two Lua functions, for a script of another package
// that counts accepted resolves in the same atomic step as its own writes (jobs' batch
// creation): day_used(DK, today) is the number of resolves counted on UTC day today (a counter
// of another day reads 0) and, second, whether the counter holds today's count;
// day_set(DK, today, used, of_today) stores a new count, of_today being day_used's second
// value. DK is DayKey's key; today is floor(Redis TIME seconds / 86400).
//
// The counter expires an hour after its day ends. The expiry is set with the day's first count
// only: every count of a day sets the same time, so a counter that already holds today's count
// has it (a refund's HINCRBY keeps it), and a later count skips one redis.call.
const DayLua = `
local function day_used(DK, today)
  local h = redis.call('HMGET', DK, 'd', 'n')
  if h[1] and h[1] + 0 == today then return (h[2] or 0) + 0, true end
  return 0, false
end
local function day_set(DK, today, used, of_today)
  redis.call('HSET', DK, 'd', string.format('%d', today), 'n', string.format('%d', used))
  if not of_today then
    redis.call('EXPIREAT', DK, string.format('%d', (today + 1) * 86400 + 3600))
  end
end
`

// DayKey is the Redis key of keyID's daily-quota counter, under the key's hash tag.
func DayKey(keyID string) string { return dayKey(keyID) }

// AdmitManyIn queues the authentication of r and the admission of n requests of its key on p
// (a batch, whose items each count as one request); the returned function decodes the reply
// after p ran, and reports ErrNoScript as AdmitIn does. The Decision is Allowed when at least
// one request was admitted (or, for n = 0, when one could be); Admission.Granted says how many,
// always the first ones. r.CountDay and r.Fetch are ignored: the day counter is only read.
func (l *Limiter) AdmitManyIn(ctx context.Context, p redis.Pipeliner, r AdmitRequest, n int) func() (Admission, error) {
	lk, dk := logKey(r.KeyID), dayKey(r.KeyID)
	members := make([]string, n)
	args := make([]any, 0, 3+n)
	fixed := ""
	if l.fixedNow != nil {
		fixed = strconv.FormatInt(l.fixedNow().UnixMicro(), 10)
	}
	args = append(args, r.Digest, l.window.Microseconds(), fixed)
	for i := range members {
		members[i] = l.prefix + strconv.FormatUint(l.seq.Add(1), 36)
		args = append(args, members[i])
	}
	cmd := admitManyScript.EvalSha(ctx, p, []string{r.RecordKey, lk, dk}, args...)
	return func() (Admission, error) {
		v, err := cmd.Slice()
		if err != nil {
			return Admission{}, scriptError("admit many", err)
		}
		if len(v) == 1 {
			return Admission{}, nil
		}
		if len(v) != 8 {
			return Admission{}, fmt.Errorf("%w: %d values from the admit-many script", ErrUnexpectedReply, len(v))
		}
		a := Admission{Authenticated: true, Record: recordOf(v[1])}
		ints := make([]int64, 6)
		for i := range ints {
			x, ok := v[2+i].(int64)
			if !ok {
				return Admission{}, fmt.Errorf("%w: non-integer from the admit-many script", ErrUnexpectedReply)
			}
			ints[i] = x
		}
		granted, now, count, free, used, today := ints[0], ints[1], ints[2], ints[3], ints[4], ints[5]
		lim := Limits{DailyQuota: -1}
		lim.PerMinute, _ = strconv.Atoi(a.Record[keys.FieldRateLimit])
		if q, ok := a.Record[keys.FieldDailyQuota]; ok {
			lim.DailyQuota, _ = strconv.ParseInt(q, 10, 64)
		}
		allowed, code := int64(1), int64(0)
		if granted == 0 {
			allowed, code = 0, 1
		}
		a.Decision, err = l.decide([]int64{allowed, code, now, count, free, used, today}, lim, false, "", lk, dk, time.Now())
		if err != nil {
			return Admission{}, err
		}
		a.Granted = int(granted)
		if n == 0 {
			a.Granted = 0
		}
		if lim.PerMinute > 0 {
			a.Decision.members = members[:a.Granted]
			if count >= int64(lim.PerMinute) {
				a.Decision.SlotRetryAfter = time.Duration(free-now) * time.Microsecond
			}
		}
		return a, nil
	}
}

// WithDayUsed returns d with its day window as it stands after used resolves were counted on
// the day of d (the headers of a batch describe the state after it).
func (d Decision) WithDayUsed(used int64) Decision {
	if d.Day != nil {
		w := *d.Day
		w.Remaining = max(0, w.Limit-used)
		d.Day = &w
	}
	return d
}

// Today is the UTC day number of d's Redis time, as DayLua's scripts count it.
func (d Decision) Today() int64 { return d.Now.Unix() / 86400 }

// RefundMany gives back what a batch admitted by AdmitManyIn took but must not keep: the log
// entries of its admitted requests after the first keep of them, and dayUnits units of the day
// counter taken on UTC day day (DayLua's count; nothing when the day has changed since).
func (l *Limiter) RefundMany(ctx context.Context, d Decision, keep int, dayUnits, day int64) error {
	var members []string
	if keep < len(d.members) {
		members = d.members[max(keep, 0):]
	}
	if len(members) == 0 && dayUnits <= 0 {
		return nil
	}
	l.blocked.remove(d.logKey)
	dayArg := ""
	if dayUnits > 0 {
		dayArg = strconv.FormatInt(day, 10)
	}
	args := []any{dayArg, dayUnits}
	for _, m := range members {
		args = append(args, m)
	}
	if err := batchRefundScript.Run(ctx, l.rdb, []string{d.logKey, d.dayKey}, args...).Err(); err != nil {
		return fmt.Errorf("quota: refund: %w", err)
	}
	return nil
}
