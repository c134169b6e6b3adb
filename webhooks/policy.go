package webhooks

import (
	"errors"
	"math"
	"math/rand/v2"
	"time"
)

// Defaults of [Policy], as docs/configuration.md#variables lists them.
const (
	DefaultRatePerSecond = 10
	DefaultMaxRetries    = 3
	DefaultTimeout       = 30 * time.Second
	DefaultBackoffBase   = 5 * time.Second
)

// Fixed parts of the policy.
const (
	// MaxRetryAfter caps a receiver's Retry-After: a receiver cannot park a delivery for longer
	// than this with one answer.
	MaxRetryAfter = 10 * time.Minute
	// MaxBackoff caps the exponential schedule, which only matters when MaxRetries is raised
	// far above the default (base 5 s reaches a day at retry 9).
	MaxBackoff = 24 * time.Hour
	// jitter is the ± fraction applied to every backoff, so deliveries that failed together
	// (a receiver outage) do not all come back in the same instant.
	jitter = 0.2
	// taskTimeoutMargin is added to Timeout for the asynq task's own timeout: the task also
	// reserves a rate slot and writes the job's state, and asynq must never think a delivery
	// is lost (and start a second one) while the first is still inside its HTTP request.
	taskTimeoutMargin = 30 * time.Second
)

// Policy is the delivery policy: WEBHOOK_RATE_PER_SECOND, WEBHOOK_MAX_RETRIES,
// WEBHOOK_TIMEOUT and WEBHOOK_BACKOFF_BASE. A zero rate or duration means its default;
// MaxRetries means what WEBHOOK_MAX_RETRIES means, so 0 is no retries. DefaultPolicy is the
// documented policy whole.
type Policy struct {
	RatePerSecond int           // WEBHOOK_RATE_PER_SECOND, default 10
	MaxRetries    int           // WEBHOOK_MAX_RETRIES: retries after the first failed attempt, 0 = none
	Timeout       time.Duration // WEBHOOK_TIMEOUT, default 30s
	BackoffBase   time.Duration // WEBHOOK_BACKOFF_BASE, default 5s: retry n after base×4^(n−1) ±20 %
}

// DefaultPolicy is the documented policy (docs/webhooks.md#delivery-policy-and-retries):
// 10 attempts per second per URL, 3 retries, 30 s timeout, retries after 5 s, 20 s and 80 s
// (±20 %). The binaries build their policy from configuration (whose defaults are these
// constants); this is for callers that deliver without one, tests among them.
func DefaultPolicy() Policy { return Policy{MaxRetries: DefaultMaxRetries}.withDefaults() }

func (p Policy) withDefaults() Policy {
	if p.RatePerSecond <= 0 {
		p.RatePerSecond = DefaultRatePerSecond
	}
	// Validate refuses a negative count; should one get here anyway, it cannot mean more.
	p.MaxRetries = max(p.MaxRetries, 0)
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	if p.BackoffBase <= 0 {
		p.BackoffBase = DefaultBackoffBase
	}
	return p
}

// Rate is the effective WEBHOOK_RATE_PER_SECOND.
func (p Policy) Rate() int { return p.withDefaults().RatePerSecond }

// Retries is the effective WEBHOOK_MAX_RETRIES: attempts in all are Retries()+1.
func (p Policy) Retries() int { return p.withDefaults().MaxRetries }

// AttemptTimeout is the effective WEBHOOK_TIMEOUT.
func (p Policy) AttemptTimeout() time.Duration { return p.withDefaults().Timeout }

// TaskTimeout is the timeout to give the asynq delivery task: above the attempt timeout, so
// a delivery is never run twice in parallel.
func (p Policy) TaskTimeout() time.Duration { return p.AttemptTimeout() + taskTimeoutMargin }

// InFlight is the cap on attempts to one URL running at once across all workers: the rate
// per second. A receiver answering within a second never meets it; one that hangs until the
// timeout holds at most this many worker slots instead of all of them.
func (p Policy) InFlight() int { return p.Rate() }

// Validate rejects negative rates, retry counts and durations; a zero rate or duration is
// allowed and means the default.
func (p Policy) Validate() error {
	var errs []error
	if p.RatePerSecond < 0 {
		errs = append(errs, errors.New("WEBHOOK_RATE_PER_SECOND must not be negative"))
	}
	if p.MaxRetries < 0 {
		errs = append(errs, errors.New("WEBHOOK_MAX_RETRIES must not be negative"))
	}
	if p.Timeout < 0 {
		errs = append(errs, errors.New("WEBHOOK_TIMEOUT must not be negative"))
	}
	if p.BackoffBase < 0 {
		errs = append(errs, errors.New("WEBHOOK_BACKOFF_BASE must not be negative"))
	}
	return errors.Join(errs...)
}

// Backoff is the delay before retry n (n ≥ 1; smaller n count as 1): BackoffBase × 4^(n−1),
// times a uniformly random factor in [0.8, 1.2], capped at [MaxBackoff]. With the defaults:
// 5 s, 20 s, 80 s.
func (p Policy) Backoff(n int) time.Duration {
	p = p.withDefaults()
	if n < 1 {
		n = 1
	}
	d := float64(p.BackoffBase) * math.Pow(4, float64(n-1))
	d *= 1 - jitter + 2*jitter*rand.Float64()
	if d >= float64(MaxBackoff) {
		return MaxBackoff
	}
	return time.Duration(d)
}

// RetryDelay is the delay before retry n after outcome o: the receiver's Retry-After when it
// gave one (on 429 or 503, already capped at [MaxRetryAfter]), else [Policy.Backoff].
// A receiver that asks for a shorter pause than the schedule gets it: it said when it can
// take the event again, and it is the one being protected.
func (p Policy) RetryDelay(n int, o Outcome) time.Duration {
	if o.RetryAfter > 0 {
		return min(o.RetryAfter, MaxRetryAfter)
	}
	return p.Backoff(n)
}

// Apply records one finished attempt, started at at, in s and says whether another attempt
// follows and after how long (counted from the attempt's end, at + o.Duration).
//
// Success (2xx) makes s delivered. A permanent failure (410) or a failure with the retries
// used up makes s failed. Any other failure keeps s pending with next_attempt_at set, and
// returns retry=true with the delay. Attempts held back by the rate limiter never reach
// Apply: they are not attempts.
func (p Policy) Apply(s *State, o Outcome, at time.Time) (delay time.Duration, retry bool) {
	p = p.withDefaults()
	at = at.UTC()
	s.Attempts++
	s.LastAttemptAt = &at
	s.LastStatusCode = nil
	if o.StatusCode != 0 {
		code := o.StatusCode
		s.LastStatusCode = &code
	}
	s.LastError = nil
	s.NextAttemptAt, s.Held = nil, false
	if o.Delivered {
		s.Status = StatusDelivered
		return 0, false
	}
	msg := o.Describe()
	s.LastError = &msg
	// Attempts-1 retries have been made; another one is allowed while that is below the limit.
	if o.Permanent || s.Attempts-1 >= p.MaxRetries {
		s.Status = StatusFailed
		return 0, false
	}
	delay = p.RetryDelay(s.Attempts, o)
	// The delay runs from the attempt's end, which is when the caller schedules the retry.
	next := at.Add(o.Duration + delay)
	s.Status = StatusPending
	s.NextAttemptAt = &next
	return delay, true
}
