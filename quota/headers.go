package quota

import (
	"net/http"
	"strconv"
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
	// Built with appends and stored under their canonical names (what Header.Set would store,
	// and what goes on the wire): these fields are on every /v1 answer, and building them with
	// Set, Quote and Join cost a poll a few µs. The fields' values share one backing array, each
	// a slice of capacity 1 so that an Add to one field cannot write over the next.
	vals := make([]string, 0, 6)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	var pbuf, sbuf [96]byte // room for both policies' items without growing
	policy, state := pbuf[:0], sbuf[:0]
	if d.Minute.Limit > 0 {
		set(hdrLimit, strconv.FormatInt(d.Minute.Limit, 10))
		set(hdrRemaining, strconv.FormatInt(d.Minute.Remaining, 10))
		set(hdrReset, strconv.FormatInt(ceilUnix(d.Minute.Reset), 10))
		name := d.policy
		if name == "" {
			name = PolicyMinute
		}
		policy = appendItem(policy, name, "q", d.Minute.Limit, "w", ceilSeconds(d.windowLen()))
		state = appendItem(state, name, "r", d.Minute.Remaining, "t", untilSeconds(d.Now, d.Minute.Reset))
	}
	if d.Day != nil {
		policy = appendItem(policy, PolicyDay, "q", d.Day.Limit, "w", 86400)
		state = appendItem(state, PolicyDay, "r", d.Day.Remaining, "t", untilSeconds(d.Now, d.Day.Reset))
	}
	if len(policy) > 0 {
		set(hdrPolicy, string(policy))
		set(hdrState, string(state))
	}
	if !d.Allowed {
		set(hdrRetryAfter, strconv.FormatInt(d.RetryAfterSeconds(), 10))
	}
}

// The rate-limit fields' names in canonical form (textproto.CanonicalMIMEHeaderKey).
const (
	hdrLimit      = "X-Ratelimit-Limit"
	hdrRemaining  = "X-Ratelimit-Remaining"
	hdrReset      = "X-Ratelimit-Reset"
	hdrPolicy     = "Ratelimit-Policy"
	hdrState      = "Ratelimit"
	hdrRetryAfter = "Retry-After"
)

// windowLen is the rolling window the decision was made with; a zero Decision built by hand
// (tests, callers) means the default.
func (d Decision) windowLen() time.Duration {
	if d.Window <= 0 {
		return DefaultWindow
	}
	return d.Window
}

// appendItem appends one structured-field list member, "name";k1=v1;k2=v2, after a ", " when b
// already holds one. Policy names are plain tokens, so quoting them needs no escaping.
func appendItem(b []byte, name, k1 string, v1 int64, k2 string, v2 int64) []byte {
	if len(b) > 0 {
		b = append(b, ", "...)
	}
	b = strconv.AppendQuote(b, name)
	b = append(b, ';')
	b = append(b, k1...)
	b = append(b, '=')
	b = strconv.AppendInt(b, v1, 10)
	b = append(b, ';')
	b = append(b, k2...)
	b = append(b, '=')
	return strconv.AppendInt(b, v2, 10)
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
