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

// rateKeyPrefix starts the Redis key of each webhook URL's attempt log.
const rateKeyPrefix = "linkhop:webhook:rate:"

// rateScript is the whole check-and-record, atomic in Redis. The log is a sorted set of
// admitted attempts scored by Redis TIME in microseconds (the only clock: worker clocks never
// matter). Entries at or before now−window are dropped; if fewer than the limit remain, the
// attempt is recorded and {0, now} returned; otherwise nothing is written and {wait, now}
// says in microseconds when the oldest entry leaves the window. Microseconds since 1970 stay
// below 2^53, so Lua's doubles hold them exactly; the results are integers, never tostring().
//
// KEYS[1] log; ARGV[1] limit; ARGV[2] window µs; ARGV[3] random member suffix.
var rateScript = redis.NewScript(`
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) + 1000)
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
	member := strconv.FormatUint(rand.Uint64(), 36)
	res, err := rateScript.Run(ctx, l.rdb, []string{rateKey(url)},
		l.limit, l.window.Microseconds(), member).Int64Slice()
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
func rateKey(raw string) string {
	sum := sha256.Sum256([]byte(normalizeURL(raw)))
	return rateKeyPrefix + hex.EncodeToString(sum[:16])
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
