package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RateGuard is added to the one-second window of the [RateLimiter]. The limiter records the
// moment an attempt is admitted, but what a receiver sees is the moment the request arrives,
// a few milliseconds later and not always the same few: without a guard, an attempt admitted
// exactly one second after another could arrive less than a second after it. 50 ms covers
// scheduling and connection jitter on a busy worker and costs under 5 % of the rate.
const RateGuard = 50 * time.Millisecond

// keyPrefix starts the Redis keys of each webhook URL: its attempt log and its leases of
// attempts in flight, which share a hash tag so one script can use both on Redis Cluster.
const keyPrefix = "linkhop:webhook:"

// rateScript is the whole check-and-record, atomic in Redis. The log is a sorted set of
// admitted attempts and of places in line, scored by Redis TIME in microseconds (the only
// clock: worker clocks never matter). The rule it keeps is that any span of one window holds
// at most limit entries, future places included. Microseconds since 1970 stay below 2^53, so
// Lua's doubles hold them exactly; the results are integers, never tostring().
//
// An attempt is admitted now when fewer than limit entries lie after now−window (future places
// count: they are attempts that will be sent). Otherwise the earliest moment it may be sent is
// the limit-th latest entry plus the window; an attempt with a name for its place (ARGV[6])
// takes that moment as its place in line, recorded in the log under that name, and gets
// {wait, now, 0, 1}; one without gets {wait, now, 0, 0} and records nothing. When a named
// attempt comes back, its place admits it from placeEarly before the place to placeLate after
// it; the reply's third value is the place's time less now (positive: wait that long before
// sending). The admission keeps the place's time and gets a name of its own, so a later run
// of the same attempt cannot take it for a place. An attempt that comes back later than that has lost its place: the entry is
// dropped (it was never sent, so dropping it keeps the rule) and the attempt is checked afresh.
//
// With a cap on attempts in flight (ARGV[4] > 0), KEYS[2] holds one lease per running
// attempt, scored by its expiry, and an admitted attempt takes a lease that Release gives back
// when the attempt ends. The cap is checked after the rate: an attempt the rate holds back gets
// its place whatever is in flight now (a burst to a URL is placed in line, not told to ask
// again, while its first attempts are being sent). A place come due that finds the cap reached
// is dropped, unused, and when the line reaches past now the attempt gets a new place at its
// end at once, which it waits for like any place (a receiver slower than the line's spacing:
// every place that comes due while the attempts before it are still being sent). One the rate
// would admit now that finds the cap reached waits (at most a second at a time, since a lease
// usually ends long before it expires) and is told so as unplaced.
//
// KEYS[1] log, KEYS[2] leases; ARGV[1] limit; ARGV[2] window µs; ARGV[3] the attempt's lease
// name, unique per run; ARGV[4] cap of attempts in flight (0 = none); ARGV[5] lease length µs;
// ARGV[6] the name of the attempt's place in line ("" = take none); ARGV[7] placeEarly µs;
// ARGV[8] placeLate µs. Reply: {wait µs, now µs, the admission's time − now in µs, placed}.
// Numbers are read from strings by arithmetic (x + 0), not tonumber(x), which in Redis's Lua
// 5.1 parses its argument twice (docs/benchmarks.md).
var rateScript = redis.NewScript(`
local limit = ARGV[1] + 0
local window = ARGV[2] + 0
local cap = ARGV[4] + 0
local place = ARGV[6]
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
-- Numbers go to redis.call as strings printed as integers: one it is handed as a number,
-- Redis prints with %.17g, a floating-point conversion each (docs/benchmarks.md).
local function int(x) return string.format('%d', x) end
local function keep()
  local last = redis.call('ZRANGE', KEYS[1], '-1', '-1', 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], int(math.floor((math.max(last[2] + 0, now) - now + window) / 1000) + 1000))
end
local mine = nil
if place ~= '' then
  mine = redis.call('ZSCORE', KEYS[1], place)
  if mine then
    mine = mine + 0
    if mine - now > ARGV[7] + 0 then
      return {mine - now, now, 0, 1}
    end
    if now - mine > ARGV[8] + 0 then
      redis.call('ZREM', KEYS[1], place)
      mine = nil
    end
  end
end
-- The first moment the limit allows after every entry, admitted or placed; nil when that is
-- not after now.
local function nextFree()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - window))
  if redis.call('ZCARD', KEYS[1]) < limit then return nil end
  local nth = redis.call('ZRANGE', KEYS[1], int(-limit), int(-limit), 'WITHSCORES')
  local free = nth[2] + window
  if free > now then return free end
  return nil
end
local function takePlace(free)
  redis.call('ZADD', KEYS[1], int(free), place)
  keep()
  return {free - now, now, 0, 1}
end
if not mine then
  local free = nextFree()
  if free then
    if place == '' then
      return {free - now, now, 0, 0}
    end
    return takePlace(free)
  end
end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
  if redis.call('ZCARD', KEYS[2]) >= cap then
    if mine then
      -- A place come due with the cap reached: it was not used, so it goes, and when the line
      -- reaches past now the attempt takes a new place at its end at once.
      redis.call('ZREM', KEYS[1], place)
      local free = nextFree()
      if free then return takePlace(free) end
    end
    local first = redis.call('ZRANGE', KEYS[2], '0', '0', 'WITHSCORES')
    local wait = first[2] - now
    if wait > 1000000 then wait = 1000000 end
    if wait < 1 then wait = 1 end
    return {wait, now, 0, 0}
  end
end
local at = now
if mine then
  at = mine
  redis.call('ZREM', KEYS[1], place)
end
local ats = int(at)
redis.call('ZADD', KEYS[1], ats, ats .. ':' .. ARGV[3])
keep()
if cap > 0 then
  local lease = ARGV[5] + 0
  redis.call('ZADD', KEYS[2], int(now + lease), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], int(math.floor(lease / 1000) + 1000))
end
return {0, now, at - now, 0}
`)

// placeEarly and placeLate bound when a place in line admits its attempt. A place is
// forwarded to the queue a little early (jobs' forwarder, docs/webhooks.md#rate-per-webhook-url),
// and an attempt that starts before its place waits out the difference, so it is never sent
// early. One that starts up to placeLate after its place is still admitted there: that delay,
// plus the request's own time to reach the receiver, stays inside the window's RateGuard.
// Later than that (a worker busy for longer), the place is given up and the attempt asks
// again, which keeps the limit exact at the price of its turn.
const (
	placeEarly = 50 * time.Millisecond
	placeLate  = 25 * time.Millisecond
)

// RateLimiter is the exact "at most N attempts to one URL in any 1-second span" across
// processes: a Redis sorted-set log per URL, checked and written in one Lua script with Redis
// TIME as the clock. Unlike a token bucket or GCRA with a burst, it never admits more than N
// in any window, wherever the window starts. It is safe for concurrent use.
type RateLimiter struct {
	rdb    redis.UniversalClient
	limit  int
	window time.Duration
}

// NewRateLimiter returns a limiter admitting perSecond attempts per URL (≤ 0 means the
// default 10) in any window of one second plus [RateGuard].
func NewRateLimiter(rdb redis.UniversalClient, perSecond int) *RateLimiter {
	return newRateLimiter(rdb, perSecond, time.Second+RateGuard)
}

func newRateLimiter(rdb redis.UniversalClient, perSecond int, window time.Duration) *RateLimiter {
	if perSecond <= 0 {
		perSecond = DefaultRatePerSecond
	}
	return &RateLimiter{rdb: rdb, limit: perSecond, window: window}
}

// Lease is an attempt in flight, taken by Take; Release gives it back.
type Lease struct {
	l           *RateLimiter
	key, member string
}

// Release ends the attempt's lease, so another attempt to its URL may start. A lease that is
// never released (a crashed worker) expires on its own.
func (e Lease) Release(ctx context.Context) error {
	if e.l == nil {
		return nil
	}
	if err := e.l.rdb.ZRem(ctx, e.key, e.member).Err(); err != nil {
		return fmt.Errorf("webhooks: releasing a lease: %w", err)
	}
	return nil
}

// Turn is what Take gives an attempt.
type Turn struct {
	// Wait > 0: the attempt is held back and should come back after Wait; the rest is zero.
	Wait time.Duration
	// Placed, with Wait: the attempt holds its place in line, Wait from now by Redis's clock
	// (At), and its place admits it when it comes back then. Without: it took nothing.
	Placed bool
	// At is the Redis time of the attempt's place (Placed), or of its admission (Wait == 0):
	// the time it counts at in the log, which for an attempt admitted at its place may be a
	// few milliseconds before or after now. Held back without a place: when it should come
	// back (Wait from the check, by Redis's clock).
	At time.Time
	// Delay, with Wait == 0: the attempt is admitted at its place, which starts Delay from now;
	// it must not be sent before then.
	Delay time.Duration
	// Lease is the attempt's lease under the cap of attempts in flight, once admitted.
	Lease Lease

	now int64 // Redis time of the check, µs
}

// Take asks for a slot for one attempt to url, under a cap of inFlight attempts to it in
// flight at once across all workers (0: none). Admitted (Wait == 0), the attempt holds a Lease
// named member, unique per run, for at most leaseFor; ReleaseAs gives back the lease of an
// attempt whose worker died (jobs' reaper does, once the job lease of that attempt lapsed)
// instead of leaving its slot taken until leaseFor ends. The cap keeps a slow or dead
// receiver, whose attempts each run until the timeout, from occupying every worker slot.
// Held back (Wait > 0), the attempt should come back after Wait.
//
// It hands out places in line: an attempt named place (stable across the runs of one
// attempt, unique to it; "" takes no place) that finds no free slot is given the first
// moment the limit allows after every attempt already admitted or placed, and that moment is
// kept for it in the URL's log, so later attempts line up behind it instead of taking its
// slot. Coming back then, it is admitted at once (after Delay, if early). One that comes back
// more than a few milliseconds late has lost its place and is checked like a new attempt.
// Places make a held-back attempt wait once, for its turn, instead of asking again and again;
// the limit stays exact, places included.
func (l *RateLimiter) Take(ctx context.Context, url, member, place string, inFlight int, leaseFor time.Duration) (Turn, error) {
	ks, args := l.scriptArgs(url, member, place, inFlight, leaseFor)
	return l.turn(url, member, inFlight, rateScript.Run(ctx, l.rdb, ks, args...))
}

// TakeIn adds Take's check to pipeline p, for a caller that sends it with commands of its own
// in one round trip (jobs' delivery sends it with the reads of the job and its key); the
// function returned, called once p has run, gives what Take gives. When Redis did not know
// the script yet (NOSCRIPT: nothing ran), the check is made again on its own.
func (l *RateLimiter) TakeIn(ctx context.Context, p redis.Pipeliner, url, member, place string, inFlight int, leaseFor time.Duration) func() (Turn, error) {
	ks, args := l.scriptArgs(url, member, place, inFlight, leaseFor)
	cmd := rateScript.EvalSha(ctx, p, ks, args...)
	return func() (Turn, error) {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			cmd = rateScript.Run(ctx, l.rdb, ks, args...)
		}
		return l.turn(url, member, inFlight, cmd)
	}
}

// GiveBack undoes what Take gave member's attempt to url when that attempt will not be made
// after all (the job turned out to have nothing to deliver): its place in line (Placed), or
// its entry in the log and its lease (admitted). An entry fewer never breaks the limit, and
// the attempts that ask next are admitted or placed by one entry fewer. A held-back attempt
// without a place took nothing. One round trip.
func (l *RateLimiter) GiveBack(ctx context.Context, url string, t Turn, member, place string) error {
	at := ""
	switch {
	case t.Placed:
	case t.Wait == 0:
		place, at = "", strconv.FormatInt(t.At.UnixMicro(), 10)
	default:
		return nil
	}
	if err := giveBackScript.Run(ctx, l.rdb, []string{rateKey(url), leaseKey(url)}, place, at, member).Err(); err != nil {
		return fmt.Errorf("webhooks: giving back a rate slot: %w", err)
	}
	return nil
}

// MovePlace gives place from in url's line to the attempt that will ask under the name to,
// at the same time: the attempt that held it is to be made by another run, which names its
// places differently (jobs hand an attempt waiting in a stopping worker to a new task). A place
// that is gone (used, or lost when it passed) stays gone. The log keeps the same entries, so
// the limit is unchanged. One round trip.
func (l *RateLimiter) MovePlace(ctx context.Context, url, from, to string) error {
	if err := movePlaceScript.Run(ctx, l.rdb, []string{rateKey(url)}, from, to).Err(); err != nil {
		return fmt.Errorf("webhooks: moving a place in line: %w", err)
	}
	return nil
}

// movePlaceScript renames member ARGV[1] of log KEYS[1] to ARGV[2], keeping its score.
var movePlaceScript = redis.NewScript(`
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not at then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], at, ARGV[2])
return 1
`)

// giveBackScript removes a place (ARGV[1], "" = none), or the admission of member ARGV[3] at
// ARGV[2] µs ("" = none), which rateScript logged as "<time>:<member>" at that score, and its
// lease. KEYS[1] log, KEYS[2] leases.
var giveBackScript = redis.NewScript(giveBackSrc)

const giveBackSrc = `
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then
  local suffix = ':' .. ARGV[3]
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])) do
    if string.sub(m, -#suffix) == suffix then redis.call('ZREM', KEYS[1], m) end
  end
  redis.call('ZREM', KEYS[2], ARGV[3])
end
return 0
`

// GivenBackAdmission reports whether cmd, as a go-redis hook sees it once it has run, was
// GiveBack's call taking back an admission (not a place), and then the key of its URL's log
// and the admission's time in µs on Redis's clock, as Take reported it (Turn.At). It is for
// observers that count admissions (the bench, tests): it knows giveBackScript's arguments,
// which only this package should. err is the call's outcome: in a go-redis ProcessHook, what
// the next hook returned, since cmd.Err() is set only after the hooks. A call that failed (the
// NOSCRIPT of a Redis that does not know the script yet, before its EVAL) is not one.
func GivenBackAdmission(cmd redis.Cmder, err error) (key string, at int64, ok bool) {
	args := cmd.Args()
	if err != nil || len(args) != 8 {
		return "", 0, false
	}
	switch name := strings.ToLower(cmd.Name()); {
	case name == "evalsha" && args[1] == giveBackScript.Hash():
	case name == "eval" && args[1] == giveBackSrc:
	default:
		return "", 0, false
	}
	key, _ = args[3].(string)
	at, perr := strconv.ParseInt(fmt.Sprint(args[6]), 10, 64)
	if perr != nil || !strings.HasSuffix(key, ":rate") {
		return "", 0, false
	}
	return key, at, true
}

// ReleaseIn adds Release's write to pipeline p, for a caller that ends the attempt with a write
// of its own in the same round trip.
func (e Lease) ReleaseIn(ctx context.Context, p redis.Pipeliner) {
	if e.l != nil {
		p.ZRem(ctx, e.key, e.member)
	}
}

// ReleaseAs gives back the lease that Take gave an attempt to url under member; a lease already
// released or expired is no error.
func (l *RateLimiter) ReleaseAs(ctx context.Context, url, member string) error {
	return Lease{l: l, key: leaseKey(url), member: member}.Release(ctx)
}

// scriptArgs are rateScript's keys and arguments for one check.
func (l *RateLimiter) scriptArgs(url, member, place string, inFlight int, leaseFor time.Duration) ([]string, []any) {
	return []string{rateKey(url), leaseKey(url)}, []any{l.limit, l.window.Microseconds(), member, max(inFlight, 0),
		leaseFor.Microseconds(), place, placeEarly.Microseconds(), placeLate.Microseconds()}
}

// turn decodes rateScript's reply for member's attempt to url.
func (l *RateLimiter) turn(url, member string, inFlight int, cmd *redis.Cmd) (Turn, error) {
	res, err := cmd.Int64Slice()
	if err != nil {
		return Turn{}, fmt.Errorf("webhooks: rate check: %w", err)
	}
	if len(res) != 4 {
		return Turn{}, fmt.Errorf("webhooks: rate check: unexpected reply of %d values", len(res))
	}
	turn := Turn{Wait: time.Duration(res[0]) * time.Microsecond, Placed: res[3] == 1, now: res[1]}
	switch {
	case turn.Wait > 0:
		turn.At = time.UnixMicro(res[1] + res[0])
	case turn.Wait == 0:
		turn.At = time.UnixMicro(res[1] + res[2])
		turn.Delay = max(time.Duration(res[2])*time.Microsecond, 0)
		if inFlight > 0 {
			turn.Lease = Lease{l: l, key: leaseKey(url), member: member}
		}
	}
	return turn, nil
}

// rateKey is the Redis key of url's log. URLs that differ only in the case of scheme or host,
// a default port or a fragment reach the same receiver and share a log; the hash keeps keys
// short whatever the URL's length.
func rateKey(raw string) string { return urlTag(raw) + ":rate" }

// leaseKey is the Redis key of url's leases of attempts in flight.
func leaseKey(raw string) string { return urlTag(raw) + ":inflight" }

func urlTag(raw string) string {
	sum := sha256.Sum256([]byte(normalizeURL(raw)))
	return keyPrefix + "{" + hex.EncodeToString(sum[:16]) + "}"
}

func normalizeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	u.Scheme = strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	u.Host = host
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}
