// Package problem writes RFC 9457 problem details, the body of every non-2xx answer.
//
// Each code of docs/errors.md has a fixed status and title; the type URI is the code's anchor in
// docs/errors.md, so a client (or a person) can follow it to what the error means and what to
// do. Extension members sit at the top level, as RFC 9457 §3.2 requires.
package problem

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// TypeBase is the absolute URI every problem type starts with; the code is its fragment.
const TypeBase = "https://github.com/linkhop/linkhop/blob/main/docs/errors.md"

// ContentType is the media type of problem details.
const ContentType = "application/problem+json"

// Code is a machine-readable error code of docs/errors.md.
type Code string

// The codes of docs/errors.md.
const (
	InvalidRequest       Code = "invalid_request"
	InvalidKey           Code = "invalid_key"
	OutOfCredits         Code = "out_of_credits"
	ForbiddenScope       Code = "forbidden_scope"
	NotFound             Code = "not_found"
	MethodNotAllowed     Code = "method_not_allowed"
	IdempotencyConflict  Code = "idempotency_conflict"
	LinkRemoved          Code = "link_removed"
	PayloadTooLarge      Code = "payload_too_large"
	UnsupportedMediaType Code = "unsupported_media_type"
	UnsupportedLink      Code = "unsupported_link"
	RateLimited          Code = "rate_limited"
	QuotaExceeded        Code = "quota_exceeded"
	InternalError        Code = "internal_error"
	ServiceUnavailable   Code = "service_unavailable"
)

type spec struct {
	status int
	title  string
}

var specs = map[Code]spec{
	InvalidRequest:       {http.StatusBadRequest, "Invalid request"},
	InvalidKey:           {http.StatusUnauthorized, "Invalid API key"},
	OutOfCredits:         {http.StatusPaymentRequired, "Out of credits"},
	ForbiddenScope:       {http.StatusForbidden, "Forbidden scope"},
	NotFound:             {http.StatusNotFound, "Not found"},
	MethodNotAllowed:     {http.StatusMethodNotAllowed, "Method not allowed"},
	IdempotencyConflict:  {http.StatusConflict, "Idempotency key conflict"},
	LinkRemoved:          {http.StatusGone, "Link removed"},
	PayloadTooLarge:      {http.StatusRequestEntityTooLarge, "Payload too large"},
	UnsupportedMediaType: {http.StatusUnsupportedMediaType, "Unsupported media type"},
	UnsupportedLink:      {http.StatusUnprocessableEntity, "Unsupported link"},
	RateLimited:          {http.StatusTooManyRequests, "Rate limit exceeded"},
	QuotaExceeded:        {http.StatusTooManyRequests, "Daily quota exceeded"},
	InternalError:        {http.StatusInternalServerError, "Internal server error"},
	ServiceUnavailable:   {http.StatusServiceUnavailable, "Service unavailable"},
}

// Codes lists every code, in the order of docs/errors.md. No binary needs the list; it stays
// for the tests that hold the table, docs/errors.md and openapi.json to the same codes.
func Codes() []Code {
	return []Code{InvalidRequest, InvalidKey, OutOfCredits, ForbiddenScope, NotFound,
		MethodNotAllowed, IdempotencyConflict, LinkRemoved, PayloadTooLarge, UnsupportedMediaType,
		UnsupportedLink, RateLimited, QuotaExceeded, InternalError, ServiceUnavailable}
}

// Status is the HTTP status of c (500 for an unknown code).
func (c Code) Status() int {
	if s, ok := specs[c]; ok {
		return s.status
	}
	return http.StatusInternalServerError
}

// Title is the fixed title of c.
func (c Code) Title() string { return specs[c].title }

// Type is the absolute type URI of c.
func (c Code) Type() string { return TypeBase + "#" + string(c) }

// FieldError names one offending request field, for invalid_request.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// Problem is one problem details object. Build it with New and the With… methods.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Code     Code   `json:"code"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`

	// Extension members (top level, present only for the codes that use them).
	Errors     []FieldError `json:"errors,omitempty"`
	RetryAfter *int64       `json:"retry_after,omitempty"`
	Balance    *int64       `json:"balance,omitempty"`

	retryAfter time.Duration
	headers    http.Header
}

// New builds the problem for code c with a human-readable detail.
func New(c Code, detail string) *Problem {
	return &Problem{Type: c.Type(), Title: c.Title(), Status: c.Status(), Code: c, Detail: detail}
}

// Error makes a *Problem usable as an error, so handlers can return it.
func (p *Problem) Error() string { return string(p.Code) + ": " + p.Detail }

// WithErrors adds field errors (invalid_request).
func (p *Problem) WithErrors(errs ...FieldError) *Problem {
	p.Errors = append(p.Errors, errs...)
	return p
}

// WithRetryAfter sets the Retry-After header and, for 429s, the retry_after member. Both are
// whole seconds rounded up and never below 1: a client that retries sooner is refused again.
func (p *Problem) WithRetryAfter(d time.Duration) *Problem {
	p.retryAfter = d
	if p.Status == http.StatusTooManyRequests {
		s := Seconds(d)
		p.RetryAfter = &s
	}
	return p
}

// WithBalance sets the balance member (out_of_credits).
func (p *Problem) WithBalance(b int64) *Problem {
	p.Balance = &b
	return p
}

// WithHeader adds a response header to send with the problem (for example Allow on a 405).
func (p *Problem) WithHeader(k, v string) *Problem {
	if p.headers == nil {
		p.headers = http.Header{}
	}
	p.headers.Add(k, v)
	return p
}

// Seconds rounds d up to whole seconds, at least 1.
func Seconds(d time.Duration) int64 {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// Write sends p with instance set to requestID.
func Write(w http.ResponseWriter, requestID string, p *Problem) {
	p.Instance = requestID
	h := w.Header()
	for k, vs := range p.headers {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	if p.retryAfter > 0 || p.Status == http.StatusTooManyRequests || p.Status == http.StatusServiceUnavailable {
		d := p.retryAfter
		if d <= 0 {
			d = time.Second
		}
		h.Set("Retry-After", strconv.FormatInt(Seconds(d), 10))
	}
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// Entry is a problem as one entry of a batch answer (docs/api.md#post-v1resolvebatch): every
// member the problem would have as a whole answer, except instance, which names the request
// and so belongs to the batch as a whole.
type Entry struct {
	Type       string       `json:"type"`
	Title      string       `json:"title"`
	Status     int          `json:"status"`
	Code       Code         `json:"code"`
	Detail     string       `json:"detail"`
	Errors     []FieldError `json:"errors,omitempty"`
	RetryAfter *int64       `json:"retry_after,omitempty"`
	Balance    *int64       `json:"balance,omitempty"`
}

// Entry returns p as a batch entry.
func (p *Problem) Entry() Entry {
	return Entry{Type: p.Type, Title: p.Title, Status: p.Status, Code: p.Code, Detail: p.Detail,
		Errors: p.Errors, RetryAfter: p.RetryAfter, Balance: p.Balance}
}
