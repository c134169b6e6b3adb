package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
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
// admitted attempts scored by Redis TIME in microseconds (the only clock: worker clocks never
// matter). Entries at or before now−window are dropped; if fewer than the limit remain, the
// attempt is recorded and {0, now} returned; otherwise nothing is written and {wait, now}
// says in microseconds when the oldest entry leaves the window. Microseconds since 1970 stay
// below 2^53, so Lua's doubles hold them exactly; the results are integers, never tostring().
//
// With a cap on attempts in flight (ARGV[4] > 0), KEYS[2] holds one lease per running
// attempt, scored by its expiry; while the cap is reached the attempt waits (at most a second
// at a time, since a lease usually ends long before it expires), and an admitted attempt
// takes a lease that Release gives back when the attempt ends.
//
// KEYS[1] log, KEYS[2] leases; ARGV[1] limit; ARGV[2] window µs; ARGV[3] random member
// suffix; ARGV[4] cap of attempts in flight (0 = none); ARGV[5] lease length µs.
var rateScript = redis.NewScript(`
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cap = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = tonumber(first[2]) - now
    if wait > 1000000 then wait = 1000000 end
    if wait < 1 then wait = 1 end
    return {wait, now}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) + 1000)
  if cap > 0 then
    local lease = tonumber(ARGV[5])
    redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
    redis.call('PEXPIRE', KEYS[2], math.floor(lease / 1000) + 1000)
  end
  return {0, now}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return {wait, now}
`)

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

// Reserve either takes a slot for one attempt to url (wait == 0) or reports how long until
// one frees (wait > 0), recording nothing: a held-back attempt must not use up the slot it
// is waiting for. Another process may take the freed slot first; the caller then simply gets
// a new wait.
func (l *RateLimiter) Reserve(ctx context.Context, url string) (wait time.Duration, err error) {
	wait, _, err = l.reserve(ctx, url)
	return wait, err
}

// reserve also returns the Redis time of the check in microseconds, for tests that verify
// the log against Redis's own clock.
func (l *RateLimiter) reserve(ctx context.Context, url string) (wait time.Duration, nowMicros int64, err error) {
	return l.run(ctx, url, strconv.FormatUint(rand.Uint64(), 36), 0, 0)
}

// Lease is an attempt in flight, taken by Acquire; Release gives it back.
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

// Acquire is Reserve with a cap on the attempts to url in flight at once across all workers:
// either the attempt may start now (wait == 0) and holds a Lease for at most leaseFor, or it
// should come back after wait, having taken nothing. The cap keeps a slow or dead receiver,
// whose attempts each run until the timeout, from occupying every worker slot.
func (l *RateLimiter) Acquire(ctx context.Context, url string, inFlight int, leaseFor time.Duration) (Lease, time.Duration, error) {
	return l.AcquireAs(ctx, url, strconv.FormatUint(rand.Uint64(), 36), inFlight, leaseFor)
}

// AcquireAs is Acquire with the caller's name for the lease, unique per attempt, so that
// ReleaseAs can give back the lease of an attempt whose worker died (jobs' reaper does, once
// the job lease of that attempt lapsed) instead of leaving its slot taken until leaseFor ends.
func (l *RateLimiter) AcquireAs(ctx context.Context, url, member string, inFlight int, leaseFor time.Duration) (Lease, time.Duration, error) {
	wait, _, err := l.run(ctx, url, member, inFlight, leaseFor)
	if err != nil || wait > 0 {
		return Lease{}, wait, err
	}
	if inFlight <= 0 {
		return Lease{}, 0, nil
	}
	return Lease{l: l, key: leaseKey(url), member: member}, 0, nil
}

// ReleaseIn adds Release's write to pipeline p, for a caller that ends the attempt with a write
// of its own in the same round trip.
func (e Lease) ReleaseIn(ctx context.Context, p redis.Pipeliner) {
	if e.l != nil {
		p.ZRem(ctx, e.key, e.member)
	}
}

// ReleaseAs gives back the lease that AcquireAs took for url under member; a lease already
// released or expired is no error.
func (l *RateLimiter) ReleaseAs(ctx context.Context, url, member string) error {
	return Lease{l: l, key: leaseKey(url), member: member}.Release(ctx)
}

func (l *RateLimiter) run(ctx context.Context, url, member string, inFlight int, leaseFor time.Duration) (time.Duration, int64, error) {
	res, err := rateScript.Run(ctx, l.rdb, []string{rateKey(url), leaseKey(url)},
		l.limit, l.window.Microseconds(), member, max(inFlight, 0), leaseFor.Microseconds()).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("webhooks: rate check: %w", err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("webhooks: rate check: unexpected reply of %d values", len(res))
	}
	return time.Duration(res[0]) * time.Microsecond, res[1], nil
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
