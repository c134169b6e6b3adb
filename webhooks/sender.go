package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxResponseRead is how much of a receiver's response is read (and thrown away). Reading a
// little lets the connection be reused for small answers; the cap keeps a hostile receiver
// from feeding a worker an endless body.
const MaxResponseRead = 64 << 10

// maxErrorLen caps last_error, which is stored on the job and shown to the client.
const maxErrorLen = 300

// Outcome is the result of one delivery attempt.
type Outcome struct {
	// StatusCode is the receiver's HTTP status; 0 when no response arrived.
	StatusCode int
	// Delivered: a 2xx arrived within the timeout.
	Delivered bool
	// Permanent: the receiver answered 410 Gone, so no retry follows.
	Permanent bool
	// RetryAfter is the receiver's Retry-After on a 429 or 503, capped at [MaxRetryAfter];
	// 0 when absent.
	RetryAfter time.Duration
	// Err says why the attempt failed; nil when Delivered. It wraps [ErrTimeout],
	// [ErrUnsupportedScheme], a *[StatusError], the transport's error (the address guard's
	// refusal among them), or the caller's context error when ctx ended first (a shutdown:
	// the caller should not count that as an attempt).
	Err error
	// Duration is how long the attempt took.
	Duration time.Duration
}

// Describe is the attempt's failure in a short sentence for the job's last_error, empty when
// delivered. It never contains the webhook URL, whose query may hold the receiver's token.
func (o Outcome) Describe() string {
	if o.Delivered {
		return ""
	}
	if o.Err == nil {
		return "delivery failed"
	}
	msg := strings.TrimPrefix(o.Err.Error(), "webhooks: ")
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen] + "…"
	}
	return msg
}

// Class is the attempt's result class for metrics: 2xx, 3xx, 4xx, 5xx, timeout or error.
func (o Outcome) Class() string {
	switch {
	case errors.Is(o.Err, ErrTimeout):
		// Checked first: a 2xx whose body did not arrive in time is a timeout, not a 2xx.
		return "timeout"
	case o.StatusCode >= 200 && o.StatusCode < 600:
		return strconv.Itoa(o.StatusCode/100) + "xx"
	default:
		return "error"
	}
}

// Sender makes one delivery attempt at a time: POST, no redirects followed (3xx = failure),
// whole-attempt timeout, response read up to 64 KiB and discarded, Retry-After parsed on
// 429/503 (capped 10 min), 410 => Permanent. It is safe for concurrent use.
type Sender struct {
	// Client sends the requests. Its CheckRedirect is ignored: redirects are never followed.
	// Nil means a client built as NewSender(nil, …) builds it, for each attempt.
	Client *http.Client
	// Policy supplies the attempt timeout.
	Policy Policy
}

// NewSender returns a Sender whose client uses transport, which must apply the address guard
// at dial time (the lead passes resolve.NewTransport(guard)). A nil transport means a plain
// transport without any guard and without a proxy: for tests only.
func NewSender(transport http.RoundTripper, p Policy) *Sender {
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		transport = t
	}
	return &Sender{Client: &http.Client{Transport: transport, CheckRedirect: noRedirect}, Policy: p}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Send POSTs body to rawURL with the headers h (already signed) and reports the outcome. The
// whole attempt — dial, TLS, writing the request, the response headers and reading up to
// [MaxResponseRead] of its body — must end within the policy's Timeout.
func (s *Sender) Send(ctx context.Context, rawURL string, h http.Header, body []byte) Outcome {
	start := time.Now()
	o := s.send(ctx, rawURL, h, body)
	o.Duration = time.Since(start)
	return o
}

func (s *Sender) send(ctx context.Context, rawURL string, h http.Header, body []byte) Outcome {
	timeout := s.Policy.AttemptTimeout()
	u, err := url.Parse(rawURL)
	if err != nil {
		return Outcome{Err: fmt.Errorf("webhooks: bad webhook url: %w", errors.Unwrap(err))}
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return Outcome{Err: ErrUnsupportedScheme}
	}
	client := s.Client
	if client == nil {
		client = NewSender(nil, s.Policy).Client
	}
	c := *client
	c.CheckRedirect = noRedirect

	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Outcome{Err: fmt.Errorf("webhooks: building request: %w", err)}
	}
	if h != nil {
		req.Header = h.Clone()
	}
	resp, err := c.Do(req)
	if err != nil {
		return Outcome{Err: attemptError(ctx, actx, timeout, err)}
	}
	defer resp.Body.Close()
	o := Outcome{StatusCode: resp.StatusCode}
	// Read (a capped amount of) the answer before judging it: a 2xx that cannot be read within
	// the timeout is not "a 2xx within WEBHOOK_TIMEOUT".
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseRead)); err != nil {
		o.Err = attemptError(ctx, actx, timeout, err)
		return o
	}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		o.Delivered = true
	case code == http.StatusGone:
		o.Permanent = true
		o.Err = &StatusError{Code: code}
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			o.RetryAfter = d
		}
		o.Err = &StatusError{Code: code}
	default:
		o.Err = &StatusError{Code: code}
	}
	return o
}

// attemptError names why a request failed: the caller's context (shutdown), the attempt's
// own deadline (timeout), or the transport. The *url.Error wrapper is dropped so that the
// webhook URL, which may carry a token, does not reach last_error or the logs.
func attemptError(parent, attempt context.Context, timeout time.Duration, err error) error {
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("webhooks: attempt interrupted: %w", perr)
	}
	if errors.Is(attempt.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s", ErrTimeout, timeout)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("webhooks: request failed: %w", err)
}

// ParseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date (relative to
// now), and caps it at [MaxRetryAfter]. A date in the past is 0. ok is false when v is
// empty or neither form.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		for i := 0; i < len(v); i++ {
			if v[i] < '0' || v[i] > '9' {
				return 0, false
			}
		}
		// Anything longer than 9 digits is over the cap; do not let ParseInt overflow.
		if len(v) > 9 {
			return MaxRetryAfter, true
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		return min(time.Duration(n)*time.Second, MaxRetryAfter), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	if d < 0 {
		d = 0
	}
	return min(d, MaxRetryAfter), true
}
