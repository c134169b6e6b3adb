package quota

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Policy names in the RateLimit-Policy and RateLimit fields.
const (
	// PolicyMinute names the rolling per-minute limit.
	PolicyMinute = "minute"
	// PolicyDay names the daily quota.
	PolicyDay = "day"
	// PolicyAuthFailures names the per-client limit on failed authentications.
	PolicyAuthFailures = "auth_failures"
)

// SetHeaders writes the rate-limit fields of d to h:
//
//   - X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (absolute unix seconds,
//     rounded up, when the next slot of the rolling window frees), only when the rolling
//     window has a limit;
//   - RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers-11: quoted policy
//     names, t in seconds from now, rounded up), with a "minute" entry when the rolling window
//     has a limit and a "day" entry when the key has a quota;
//   - Retry-After in whole seconds, rounded up and at least 1, when d is a rejection.
//
// A key with neither a per-minute limit nor a quota gets no rate-limit fields at all: there is
// nothing to count down, and a made-up limit would be read as a real one.
func SetHeaders(h http.Header, d Decision) {
	var policy, state []string
	if d.Minute.Limit > 0 {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(d.Minute.Limit, 10))
		h.Set("X-RateLimit-Remaining", strconv.FormatInt(d.Minute.Remaining, 10))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(ceilUnix(d.Minute.Reset), 10))
		name := d.policy
		if name == "" {
			name = PolicyMinute
		}
		policy = append(policy, item(name, "q", d.Minute.Limit, "w", ceilSeconds(d.windowLen())))
		state = append(state, item(name, "r", d.Minute.Remaining, "t", untilSeconds(d.Now, d.Minute.Reset)))
	}
	if d.Day != nil {
		policy = append(policy, item(PolicyDay, "q", d.Day.Limit, "w", 86400))
		state = append(state, item(PolicyDay, "r", d.Day.Remaining, "t", untilSeconds(d.Now, d.Day.Reset)))
	}
	if len(policy) > 0 {
		h.Set("RateLimit-Policy", strings.Join(policy, ", "))
		h.Set("RateLimit", strings.Join(state, ", "))
	}
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(d.RetryAfterSeconds(), 10))
	}
}

// windowLen is the rolling window the decision was made with; a zero Decision built by hand
// (tests, callers) means the default.
func (d Decision) windowLen() time.Duration {
	if d.Window <= 0 {
		return DefaultWindow
	}
	return d.Window
}

// item formats one structured-field list member: "name";k1=v1;k2=v2.
func item(name, k1 string, v1 int64, k2 string, v2 int64) string {
	return strconv.Quote(name) + ";" + k1 + "=" + strconv.FormatInt(v1, 10) + ";" + k2 + "=" + strconv.FormatInt(v2, 10)
}

// ceilUnix is t in unix seconds, rounded up: a client waiting until then is never early.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// untilSeconds is the whole seconds from now until t, rounded up, never negative.
func untilSeconds(now, t time.Time) int64 {
	return max(0, ceilSeconds(t.Sub(now)))
}
