package client

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is an answer that was not 2xx: the RFC 9457 problem details object the service sent
// (docs/errors.md), or as much of one as can be made from an answer that was not one (a
// proxy's HTML page, for example: then Code is empty and Title is the HTTP status text).
// Branch on Code.
type Error struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	// Type is the code's URI (…/docs/errors.md#<code>); Title is fixed per code.
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	// Instance is the request id (the X-Request-Id header): quote it in a report.
	Instance string `json:"instance"`
	// Errors lists the offending fields of an invalid_request.
	Errors []FieldError `json:"errors,omitempty"`
	// RetryAfter is how long to wait before trying again, from the Retry-After header or the
	// retry_after member; zero when the answer gave none. For quota_exceeded it can be
	// hours: the quota resets at 00:00 UTC.
	RetryAfter time.Duration `json:"-"`
	// Balance is the key's credit balance on out_of_credits.
	Balance *int64 `json:"balance,omitempty"`
}

// FieldError names one offending field of an invalid_request and why.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Error reads "linkhop: 422 unsupported_link: <detail>".
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "linkhop: %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	} else if e.Title != "" {
		b.WriteString(": " + e.Title)
	}
	for _, f := range e.Errors {
		fmt.Fprintf(&b, "; %s: %s", f.Field, f.Reason)
	}
	return b.String()
}

// Temporary reports whether sending the same request again later can succeed: a
// rate_limited 429 or a 5xx. quota_exceeded is not: it lasts until 00:00 UTC.
func (e *Error) Temporary() bool {
	return e.Code == "rate_limited" || e.Status >= 500
}

// problemBody is the wire form of a problem, with retry_after as the API sends it.
type problemBody struct {
	Error
	RetryAfterSeconds *float64 `json:"retry_after"`
}

func (p *problemBody) toError() *Error {
	e := p.Error
	if p.RetryAfterSeconds != nil && *p.RetryAfterSeconds > 0 {
		e.RetryAfter = time.Duration(math.Ceil(*p.RetryAfterSeconds)) * time.Second
	}
	return &e
}

func newError(res *http.Response, raw []byte) *Error {
	var p problemBody
	e := &Error{}
	if json.Unmarshal(raw, &p) == nil {
		e = p.toError()
	}
	// The HTTP status is the truth; a body that says otherwise (or nothing) does not win.
	e.Status = res.StatusCode
	if e.Title == "" {
		e.Title = http.StatusText(res.StatusCode)
	}
	if e.Instance == "" {
		e.Instance = res.Header.Get("X-Request-Id")
	}
	if d, ok := parseRetryAfter(res.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	return e
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, math.MaxInt64/int64(time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// JobError is a job that ended without a destination: Status "failed" or "invalid", with
// the job's error code and detail. [Client.ResolveAndWait] returns it together with the job.
type JobError struct {
	JobID  string
	Status Status
	// Code is resolve_failed, provider_down, link_removed or unsupported_link
	// (docs/errors.md#job-errors).
	Code   string
	Detail string
}

// Error reads "linkhop: job <id> failed: <code>: <detail>".
func (e *JobError) Error() string {
	s := fmt.Sprintf("linkhop: job %s %s: %s", e.JobID, e.Status, e.Code)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func jobError(j *Job) error {
	if j.Status == StatusDone {
		return nil
	}
	return &JobError{JobID: j.JobID, Status: j.Status, Code: j.Error, Detail: j.ErrorDetail}
}
