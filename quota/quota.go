// Package quota enforces each API key's rolling per-minute request limit and its UTC-day quota
// of accepted resolves, and the per-IP limit on failed authentications.
//
// The limit is a sliding-window log kept in Redis: a sorted set of the admitted requests'
// Redis times. It is the only algorithm that keeps "at most N admitted in any rolling window"
// exact; GCRA and window counters admit up to 2N-1 in some window. One Lua script per check
// reads Redis TIME (the only clock, so replicas' clocks never matter), trims the log, checks
// both the log and the day counter and records both only when both pass, in one round trip.
// All Redis keys of one API key share the hash tag {k:<key id>}, so the script is valid on
// Redis Cluster and sits in the same slot as the key's other records.
package quota

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Decision codes: the problem-details code a rejected request is answered with.
const (
	// CodeRateLimited means the rolling per-minute limit (or the failed-authentication limit)
	// is reached; a slot frees after RetryAfter.
	CodeRateLimited = "rate_limited"
	// CodeQuotaExceeded means the daily quota is used up; it renews at the next 00:00 UTC.
	CodeQuotaExceeded = "quota_exceeded"
)

// DefaultWindow is the length of the rolling window of the per-minute limit.
const DefaultWindow = time.Minute

// DefaultQuotaRetryAfterMax is QUOTA_RETRY_AFTER_MAX's default: 0, no cap, so a
// quota_exceeded answer says honestly how long until the quota renews (docs/limits.md#capping-retry-after).
const DefaultQuotaRetryAfterMax time.Duration = 0

// Limits are one API key's budgets, taken from its key record on every call so that a change
// applies at the next request.
type Limits struct {
	// PerMinute is the most requests admitted in any rolling window; 0 = unlimited.
	PerMinute int
	// DailyQuota is the most accepted resolves per UTC day; <0 = no quota (unlimited),
	// 0 = none allowed.
	DailyQuota int64
}

// Request is one authenticated request to admit.
type Request struct {
	// KeyID is the API key's id (key_…); it names the Redis keys.
	KeyID string
	// Limits are the key's current budgets.
	Limits Limits
	// CountDay is set for a POST /v1/resolve: the request counts against the daily quota.
	CountDay bool
}

// Window is the state of one budget after a check, for the response headers.
type Window struct {
	// Limit is the budget; 0 on Decision.Minute means unlimited.
	Limit int64
	// Remaining is how many more requests the budget admits now.
	Remaining int64
	// Reset is when the next slot frees: for the rolling window, when the entry that blocks the
	// next request leaves it; for the day, the next 00:00 UTC.
	Reset time.Time
}

// Decision is the outcome of a check.
type Decision struct {
	// Allowed tells whether the request was admitted (and recorded).
	Allowed bool
	// Code is "" when admitted, else CodeRateLimited or CodeQuotaExceeded.
	Code string
	// RetryAfter is, for a rejected request, the exact time until it could be admitted;
	// SetHeaders and RetryAfterSeconds round it up to whole seconds.
	RetryAfter time.Duration
	// Minute is the rolling window (Limit 0 = unlimited).
	Minute Window
	// Day is the daily quota, nil when the key has none.
	Day *Window
	// Now is the Redis time of the check (the local time when a key with neither a limit nor a
	// quota made a request that does not count: then Redis is not asked at all).
	Now time.Time
	// Window is the length of the rolling window the check used (DefaultWindow unless the
	// Limiter was built WithWindow); the RateLimit-Policy header reports it.
	Window time.Duration

	// SlotRetryAfter is, for a batch admitted in part (AdmitManyIn), the exact time until a
	// slot frees for its refused requests; 0 when none was refused.
	SlotRetryAfter time.Duration

	logKey, dayKey string   // Redis keys, for Refund
	member         string   // the log entry recorded, "" when none
	members        []string // a batch's log entries, in order
	policy         string   // RateLimit policy name of Minute, "" = PolicyMinute
	day            int64    // UTC day number the day counter was charged for, -1 when not
}

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up and never below 1, as the
// Retry-After header and the retry_after problem member carry it; 0 for an admitted request.
func (d Decision) RetryAfterSeconds() int64 {
	if d.Allowed {
		return 0
	}
	return max(1, ceilSeconds(d.RetryAfter))
}

// Limiter checks and records requests against Redis. It is safe for concurrent use; build one
// per process and share it.
type Limiter struct {
	rdb      redis.UniversalClient
	window   time.Duration
	prefix   string           // random per Limiter: log members are prefix + counter
	seq      atomic.Uint64    // counter part of log members
	blocked  *blockList       // nil when the local memory of 429s is off
	fixedNow func() time.Time // tests only: a fixed script clock instead of Redis TIME
	quotaMax time.Duration    // cap of a quota_exceeded RetryAfter; 0 = none
}

// Option configures a Limiter.
type Option func(*Limiter)

// WithWindow sets the length of the rolling window (default DefaultWindow). Production keeps
// the default, which docs/limits.md names; tests and benchmarks use short windows. Values below
// one millisecond are raised to one millisecond.
func WithWindow(d time.Duration) Option {
	return func(l *Limiter) { l.window = max(d, time.Millisecond) }
}

// WithLocalBlock turns the per-replica memory of 429s on or off (default on). After Redis
// rejects a key for its rolling limit, the replica answers further requests of that key with
// 429 without asking Redis until the earliest moment Redis could admit one; see
// docs/limits.md for why that stays exact.
func WithLocalBlock(on bool) Option {
	return func(l *Limiter) {
		if on {
			l.blocked = newBlockList(defaultMaxBlocked)
		} else {
			l.blocked = nil
		}
	}
}

// WithQuotaRetryAfterMax caps the RetryAfter of quota_exceeded decisions at d (0, the
// default, means no cap). Clients written for hosted services sleep through Retry-After before
// they retry, and an honest "until midnight" blocks them for hours; an operator who serves such
// clients trades honesty for a shorter sleep (docs/limits.md#capping-retry-after). The day
// window of the headers still says when the quota renews.
func WithQuotaRetryAfterMax(d time.Duration) Option {
	return func(l *Limiter) { l.quotaMax = max(d, 0) }
}

// QuotaRetryAfter is the RetryAfter of a quota_exceeded decision taken at now (Redis time):
// the time until the next 00:00 UTC, capped by WithQuotaRetryAfterMax.
func (l *Limiter) QuotaRetryAfter(now time.Time) time.Duration {
	d := midnightAfter(now).Sub(now)
	if l.quotaMax > 0 {
		d = min(d, l.quotaMax)
	}
	return d
}

// midnightAfter is the next 00:00 UTC after t.
func midnightAfter(t time.Time) time.Time {
	return time.Unix((t.Unix()/86400+1)*86400, 0).UTC()
}

// New returns a Limiter on rdb, which may be a standalone, failover or cluster client.
func New(rdb redis.UniversalClient, opts ...Option) *Limiter {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead of returning errors)
	l := &Limiter{
		rdb:     rdb,
		window:  DefaultWindow,
		prefix:  base64.RawURLEncoding.EncodeToString(b[:]) + ":",
		blocked: newBlockList(defaultMaxBlocked),
	}
	for _, o := range opts {
		o(l)
	}
	return l
}

func logKey(keyID string) string { return "linkhop:{k:" + keyID + "}:rl" }
func dayKey(keyID string) string { return "linkhop:{k:" + keyID + "}:day" }

// Check admits or rejects one request of r.KeyID in a single Redis round trip (the first call
// of a process may need two while Redis learns the script). The per-minute limit is judged
// first: a request over it is rate_limited even when the quota is used up too. Nothing is
// recorded for a rejected request.
func (l *Limiter) Check(ctx context.Context, r Request) (Decision, error) {
	if r.KeyID == "" {
		return Decision{}, ErrNoKeyID
	}
	if r.Limits.PerMinute < 0 {
		return Decision{}, fmt.Errorf("%w: per-minute limit %d", ErrInvalidLimits, r.Limits.PerMinute)
	}
	return l.check(ctx, logKey(r.KeyID), dayKey(r.KeyID), r.Limits, r.CountDay)
}

func (l *Limiter) check(ctx context.Context, lk, dk string, lim Limits, countDay bool) (Decision, error) {
	if lim.PerMinute == 0 && lim.DailyQuota < 0 && !countDay {
		// Nothing to count or report: no round trip. Now is the local clock here.
		return Decision{Allowed: true, Now: time.Now().UTC(), Window: l.window, logKey: lk, dayKey: dk, day: -1}, nil
	}
	if d, ok := l.blocked.lookup(lk, lim, time.Now()); ok {
		return d, nil
	}
	member := l.prefix + strconv.FormatUint(l.seq.Add(1), 36)
	keys := []string{lk}
	if lim.DailyQuota >= 0 || countDay {
		keys = append(keys, dk)
	}
	fixed := ""
	if l.fixedNow != nil {
		fixed = strconv.FormatInt(l.fixedNow().UnixMicro(), 10)
	}
	cd := "0"
	if countDay {
		cd = "1"
	}
	sent := time.Now()
	res, err := checkScript.Run(ctx, l.rdb, keys,
		lim.PerMinute, l.window.Microseconds(), member, lim.DailyQuota, cd, fixed).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("quota: check: %w", err)
	}
	if len(res) != 7 {
		return Decision{}, fmt.Errorf("%w: %d values from the check script", ErrUnexpectedReply, len(res))
	}
	return l.decide(res, lim, countDay, member, lk, dk, sent)
}

// decide turns the limiter's reply {allowed, code, now, count, free, used, today} into a
// Decision, remembering a 429 in the local block list.
func (l *Limiter) decide(res []int64, lim Limits, countDay bool, member, lk, dk string, sent time.Time) (Decision, error) {
	allowed, code, now, count, free, used, today := res[0] == 1, res[1], res[2], res[3], res[4], res[5], res[6]
	d := Decision{
		Allowed: allowed,
		Now:     time.UnixMicro(now).UTC(),
		Window:  l.window,
		logKey:  lk,
		dayKey:  dk,
		day:     -1,
	}
	if lim.PerMinute > 0 {
		d.Minute = Window{
			Limit:     int64(lim.PerMinute),
			Remaining: max(0, int64(lim.PerMinute)-count),
			Reset:     time.UnixMicro(free).UTC(),
		}
	}
	midnight := time.Unix((today+1)*86400, 0).UTC()
	if lim.DailyQuota >= 0 {
		d.Day = &Window{Limit: lim.DailyQuota, Remaining: max(0, lim.DailyQuota-used), Reset: midnight}
	}
	switch code {
	case 0:
		if lim.PerMinute > 0 {
			d.member = member
		}
		if countDay {
			d.day = today
		}
	case 1:
		d.Code = CodeRateLimited
		d.RetryAfter = time.Duration(free-now) * time.Microsecond
		l.blocked.add(lk, lim, d, sent)
	case 2:
		d.Code = CodeQuotaExceeded
		d.RetryAfter = l.QuotaRetryAfter(d.Now)
	default:
		return Decision{}, fmt.Errorf("%w: code %d from the check script", ErrUnexpectedReply, code)
	}
	return d, nil
}

// Refund gives back what an admitted request consumed when the request turns out not to count:
// minute removes its entry from the rolling log (a request that failed after admission), day
// returns its unit of the daily quota (an idempotent replay, or a failure after admission)
// unless the UTC day has changed since. Refunding a rejected Decision, or parts it did not
// consume, does nothing. Call it at most once per Decision: the day unit is not remembered.
func (l *Limiter) Refund(ctx context.Context, d Decision, minute, day bool) error {
	if !d.Allowed {
		return nil
	}
	member, dayArg := "", ""
	if minute && d.member != "" {
		member = d.member
	}
	if day && d.day >= 0 {
		dayArg = strconv.FormatInt(d.day, 10)
	}
	if member == "" && dayArg == "" {
		return nil
	}
	// A freed slot may admit the key before a remembered block ends.
	l.blocked.remove(d.logKey)
	keys := []string{d.logKey}
	if dayArg != "" {
		keys = append(keys, d.dayKey)
	}
	if err := refundScript.Run(ctx, l.rdb, keys, member, dayArg).Err(); err != nil {
		return fmt.Errorf("quota: refund: %w", err)
	}
	return nil
}

// DayUsed reports how many resolves keyID has had accepted during the current UTC day (Redis
// time), for GET /v1/account's daily_used. Resolves are counted whether or not the key has a
// quota, so the number is true for every key, and a quota set during the day applies to the
// resolves already made that day.
func (l *Limiter) DayUsed(ctx context.Context, keyID string) (int64, error) {
	if keyID == "" {
		return 0, ErrNoKeyID
	}
	n, err := dayUsedScript.Run(ctx, l.rdb, []string{dayKey(keyID)}).Int64()
	if err != nil {
		return 0, fmt.Errorf("quota: day used: %w", err)
	}
	return n, nil
}

// ceilSeconds rounds d up to whole seconds.
func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return s
}
