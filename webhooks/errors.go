package webhooks

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Errors of signing and verifying. Verify functions wrap them with %w, so receivers can
// branch with errors.Is (for example to log a stale timestamp apart from a forgery).
var (
	// ErrMalformedHeader: a signature header is missing, empty or not in its scheme's shape.
	ErrMalformedHeader = errors.New("webhooks: malformed signature header")
	// ErrTimestampOutOfTolerance: the signed timestamp is more than [Tolerance] away from now.
	// Old timestamps are refused so that a captured request cannot be replayed later.
	ErrTimestampOutOfTolerance = errors.New("webhooks: signature timestamp outside the tolerance")
	// ErrSignatureMismatch: no signature in the header matches the body and secret.
	ErrSignatureMismatch = errors.New("webhooks: no signature matches")
	// ErrInvalidSecret: a secret is not "whsec_" followed by base64.
	ErrInvalidSecret = errors.New("webhooks: invalid webhook secret")
	// ErrNoSecrets: Sign was given no secret to sign with.
	ErrNoSecrets = errors.New("webhooks: no signing secret")
	// ErrInvalidMessageID: the webhook-id is empty, too long, or not printable ASCII.
	ErrInvalidMessageID = errors.New("webhooks: invalid message id")
)

// Errors of one delivery attempt, found in [Outcome.Err].
var (
	// ErrTimeout: the attempt did not finish within the policy's Timeout.
	ErrTimeout = errors.New("webhooks: attempt timed out")
	// ErrUnsupportedScheme: the webhook URL is not http or https.
	ErrUnsupportedScheme = errors.New("webhooks: webhook url scheme must be http or https")
)

// StatusError is the error of an attempt that got a response other than 2xx.
type StatusError struct {
	// Code is the HTTP status code the receiver answered with.
	Code int
}

// Error describes the status; a 3xx says that redirects are not followed, since that is
// the surprise a receiver's operator needs to read in last_error.
func (e *StatusError) Error() string {
	switch {
	case e.Code >= 300 && e.Code < 400:
		return fmt.Sprintf("receiver answered %d %s; redirects are not followed", e.Code, http.StatusText(e.Code))
	case e.Code == http.StatusGone:
		return "receiver answered 410 Gone; no more retries"
	default:
		return fmt.Sprintf("receiver answered %d %s", e.Code, http.StatusText(e.Code))
	}
}

// HeldBackError says that the per-URL rate held an attempt back: it should run again after
// Wait, without spending a retry. The delivery task returns it so that asynq reschedules the
// task (RetryDelayFunc) instead of counting a failure (IsFailure).
type HeldBackError struct {
	// Wait is how long until the rate limiter has a free slot for the URL.
	Wait time.Duration
	// Placed: the attempt holds its place in line Wait from now (RateLimiter.Take), and is
	// brought back then by a forwarder of its own rather than by the task queue's retry.
	Placed bool
}

// Error says how long the attempt was held back.
func (e *HeldBackError) Error() string {
	return fmt.Sprintf("webhooks: held back by the per-url rate for %s", e.Wait)
}
