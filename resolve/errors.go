package resolve

import (
	"errors"
	"fmt"
	"time"
)

// Error codes of a failed resolve, as the job's "error" field carries them (CONTRACT §3, §6).
const (
	// CodeResolveFailed: loops, hop budget, captcha gates, no findable target, blocked addresses.
	CodeResolveFailed = "resolve_failed"
	// CodeProviderDown: 5xx, 429, timeouts and connection errors, once retries are spent.
	CodeProviderDown = "provider_down"
	// CodeLinkRemoved: the provider answered 404 or 410.
	CodeLinkRemoved = "link_removed"
	// CodeUnsupportedLink: the worker cannot handle the link at all (job status "invalid").
	CodeUnsupportedLink = "unsupported_link"
)

// Sentinel errors. An *Error unwraps to one of them (or to a context error) where one applies,
// so callers can test with errors.Is without parsing details.
var (
	// ErrBlockedAddress is returned by the dial guard for an address on the block list.
	ErrBlockedAddress = errors.New("address is blocked by the guard")
	// ErrBlockedPort is returned by the dial guard for a port other than 80 or 443.
	ErrBlockedPort = errors.New("port is not allowed by the guard (80 and 443 only)")
	// ErrUnsupportedURL means a URL is not absolute http(s) with a host, has userinfo, or is too long.
	ErrUnsupportedURL = errors.New("unsupported URL")
	// ErrNotProvider means a URL's host belongs to no provider.
	ErrNotProvider = errors.New("host is not a provider host")
	// ErrProviderBusy means the per-provider concurrency cap was full for the whole slot wait:
	// nothing was sent upstream, so the caller should retry later without spending an attempt.
	ErrProviderBusy = errors.New("provider concurrency cap reached")
	// ErrInvalidProvider is wrapped by provider-list validation errors.
	ErrInvalidProvider = errors.New("invalid provider")
	// ErrBadHostOverride is wrapped by ParseHostOverrides errors.
	ErrBadHostOverride = errors.New("invalid host override")
	// ErrWebhookHost is wrapped by CheckWebhookHost errors.
	ErrWebhookHost = errors.New("webhook host not allowed")
)

// Error is the failure of a resolve. Code is one of "resolve_failed", "provider_down",
// "link_removed", "unsupported_link". Transient errors should be retried by the caller (asynq)
// after RetryAfter if >0, else the caller's backoff.
type Error struct {
	Code   string
	Detail string
	// Transient is true for provider failures worth retrying (5xx, 429, timeouts, connection
	// errors, a full politeness cap). After the last attempt the job fails with Code.
	Transient bool
	// RetryAfter is the provider's Retry-After (capped at MaxRetryAfter), or a short delay for a
	// busy provider; zero means "use your own backoff".
	RetryAfter time.Duration
	// Throttled is true when nothing was sent upstream because the per-provider cap was full
	// (errors.Is(err, ErrProviderBusy) too); such a retry should not spend an attempt.
	Throttled bool
	// Hops are the hops reached before the failure, the first being the submitted URL.
	Hops []Hop
	// Cause is the underlying error, if any; Unwrap returns it.
	Cause error

	// parked, inside the walk only, means "not a failure: the walk parked" (Resolver.Park).
	parked *Parked
}

// MaxRetryAfter caps a provider's Retry-After so a hostile or confused provider cannot park a
// job for days.
const MaxRetryAfter = 10 * time.Minute

// Error returns "code: detail".
func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Code
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Detail)
}

// Unwrap returns the underlying cause (a sentinel of this package, a context error, …).
func (e *Error) Unwrap() error { return e.Cause }

// clone returns a copy whose Hops slice is not shared, for handing one result to many callers.
func (e *Error) clone() *Error {
	c := *e
	c.Hops = cloneHops(e.Hops)
	return &c
}

func cloneHops(h []Hop) []Hop {
	if h == nil {
		return nil
	}
	out := make([]Hop, len(h))
	for i, x := range h {
		out[i] = x
		if x.Status != nil {
			s := *x.Status
			out[i].Status = &s
		}
	}
	return out
}
