package problem

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEveryCodeIsComplete(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(Codes()) != len(specs) {
		t.Fatalf("Codes() has %d entries, specs %d", len(Codes()), len(specs))
	}
	for _, c := range Codes() {
		if c.Title() == "" || c.Status() < 400 {
			t.Errorf("%s: incomplete spec", c)
		}
		if !strings.HasSuffix(c.Type(), "#"+string(c)) || !strings.HasPrefix(c.Type(), "https://") {
			t.Errorf("%s: type %q is not an absolute URI ending in #code", c, c.Type())
		}
		if !strings.Contains(string(doc), "## `"+string(c)+"`") {
			t.Errorf("docs/errors.md does not explain %s", c)
		}
	}
}

func TestWrite(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		p          *Problem
		wantStatus int
		wantRetry  string
		wantBody   map[string]any
	}{
		{
			name:       "invalid request with field errors",
			p:          New(InvalidRequest, "bad").WithErrors(FieldError{"url", "required"}),
			wantStatus: 400,
			wantBody: map[string]any{"type": TypeBase + "#invalid_request", "title": "Invalid request",
				"status": 400.0, "code": "invalid_request", "detail": "bad", "instance": "req-1",
				"errors": []any{map[string]any{"field": "url", "reason": "required"}}},
		},
		{
			name:       "rate limited rounds up",
			p:          New(RateLimited, "slow down").WithRetryAfter(1500 * time.Millisecond),
			wantStatus: 429, wantRetry: "2",
			wantBody: map[string]any{"type": TypeBase + "#rate_limited", "title": "Rate limit exceeded",
				"status": 429.0, "code": "rate_limited", "detail": "slow down", "instance": "req-1",
				"retry_after": 2.0},
		},
		{
			name:       "never below one second",
			p:          New(QuotaExceeded, "q").WithRetryAfter(10 * time.Millisecond),
			wantStatus: 429, wantRetry: "1",
			wantBody: map[string]any{"type": TypeBase + "#quota_exceeded", "title": "Daily quota exceeded",
				"status": 429.0, "code": "quota_exceeded", "detail": "q", "instance": "req-1",
				"retry_after": 1.0},
		},
		{
			name:       "service unavailable has Retry-After but no member",
			p:          New(ServiceUnavailable, "later"),
			wantStatus: 503, wantRetry: "1",
			wantBody: map[string]any{"type": TypeBase + "#service_unavailable", "title": "Service unavailable",
				"status": 503.0, "code": "service_unavailable", "detail": "later", "instance": "req-1"},
		},
		{
			name:       "balance",
			p:          New(OutOfCredits, "need 2").WithBalance(1),
			wantStatus: 402,
			wantBody: map[string]any{"type": TypeBase + "#out_of_credits", "title": "Out of credits",
				"status": 402.0, "code": "out_of_credits", "detail": "need 2", "instance": "req-1",
				"balance": 1.0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			Write(rec, "req-1", tc.p)
			if rec.Code != tc.wantStatus {
				t.Errorf("status %d, want %d", rec.Code, tc.wantStatus)
			}
			if ct := rec.Header().Get("Content-Type"); ct != ContentType {
				t.Errorf("content type %q", ct)
			}
			if got := rec.Header().Get("Retry-After"); got != tc.wantRetry {
				t.Errorf("Retry-After %q, want %q", got, tc.wantRetry)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.wantBody, body); d != "" {
				t.Errorf("body (-want +got):\n%s", d)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Write(rec, "r", New(MethodNotAllowed, "x").WithHeader("Allow", "GET"))
	if rec.Header().Get("Allow") != "GET" || rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("got %d %v", rec.Code, rec.Header())
	}
}
