package quota

import (
	"net/http"
	"net/textproto"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSetHeaders(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 400_000_000, time.UTC) // unix 1772366400.4
	midnight := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		d    Decision
		want http.Header
	}{
		{
			name: "admitted, minute only",
			d: Decision{Allowed: true, Now: now,
				Minute: Window{Limit: 60, Remaining: 59, Reset: now.Add(60 * time.Second)}},
			want: http.Header{
				"X-Ratelimit-Limit":     {"60"},
				"X-Ratelimit-Remaining": {"59"},
				"X-Ratelimit-Reset":     {"1772366461"},
				"Ratelimit-Policy":      {`"minute";q=60;w=60`},
				"Ratelimit":             {`"minute";r=59;t=60`},
			},
		},
		{
			name: "admitted, minute and day",
			d: Decision{Allowed: true, Now: now,
				Minute: Window{Limit: 60, Remaining: 10, Reset: now.Add(12*time.Second + time.Microsecond)},
				Day:    &Window{Limit: 1000, Remaining: 998, Reset: midnight}},
			want: http.Header{
				"X-Ratelimit-Limit":     {"60"},
				"X-Ratelimit-Remaining": {"10"},
				"X-Ratelimit-Reset":     {"1772366413"},
				"Ratelimit-Policy":      {`"minute";q=60;w=60, "day";q=1000;w=86400`},
				"Ratelimit":             {`"minute";r=10;t=13, "day";r=998;t=43200`},
			},
		},
		{
			name: "rate limited",
			d: Decision{Code: CodeRateLimited, Now: now, RetryAfter: 2*time.Second + time.Microsecond,
				Minute: Window{Limit: 5, Remaining: 0, Reset: now.Add(2*time.Second + time.Microsecond)}},
			want: http.Header{
				"X-Ratelimit-Limit":     {"5"},
				"X-Ratelimit-Remaining": {"0"},
				"X-Ratelimit-Reset":     {"1772366403"},
				"Ratelimit-Policy":      {`"minute";q=5;w=60`},
				"Ratelimit":             {`"minute";r=0;t=3`},
				"Retry-After":           {"3"},
			},
		},
		{
			name: "rate limited for less than a second",
			d: Decision{Code: CodeRateLimited, Now: now, RetryAfter: time.Microsecond,
				Minute: Window{Limit: 5, Remaining: 0, Reset: now.Add(time.Microsecond)}},
			want: http.Header{
				"X-Ratelimit-Limit":     {"5"},
				"X-Ratelimit-Remaining": {"0"},
				"X-Ratelimit-Reset":     {"1772366401"},
				"Ratelimit-Policy":      {`"minute";q=5;w=60`},
				"Ratelimit":             {`"minute";r=0;t=1`},
				"Retry-After":           {"1"},
			},
		},
		{
			name: "quota exceeded, minute unlimited",
			d: Decision{Code: CodeQuotaExceeded, Now: now, RetryAfter: midnight.Sub(now),
				Day: &Window{Limit: 3, Remaining: 0, Reset: midnight}},
			want: http.Header{
				"Ratelimit-Policy": {`"day";q=3;w=86400`},
				"Ratelimit":        {`"day";r=0;t=43200`},
				"Retry-After":      {"43200"},
			},
		},
		{
			name: "unlimited, no quota",
			d:    Decision{Allowed: true, Now: now},
			want: http.Header{},
		},
		{
			name: "short window",
			d: Decision{Allowed: true, Now: now, Window: 1500 * time.Millisecond,
				Minute: Window{Limit: 2, Remaining: 1, Reset: now.Add(1500 * time.Millisecond)}},
			want: http.Header{
				"X-Ratelimit-Limit":     {"2"},
				"X-Ratelimit-Remaining": {"1"},
				"X-Ratelimit-Reset":     {"1772366402"},
				"Ratelimit-Policy":      {`"minute";q=2;w=2`},
				"Ratelimit":             {`"minute";r=1;t=2`},
			},
		},
		{
			name: "failed authentications",
			d: Decision{Code: CodeRateLimited, Now: now, RetryAfter: 30 * time.Second, policy: PolicyAuthFailures,
				Minute: Window{Limit: 30, Remaining: 0, Reset: now.Add(30 * time.Second)}},
			want: http.Header{
				"X-Ratelimit-Limit":     {"30"},
				"X-Ratelimit-Remaining": {"0"},
				"X-Ratelimit-Reset":     {"1772366431"},
				"Ratelimit-Policy":      {`"auth_failures";q=30;w=60`},
				"Ratelimit":             {`"auth_failures";r=0;t=30`},
				"Retry-After":           {"30"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := make(http.Header)
			SetHeaders(got, tt.d)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    Decision
		want int64
	}{
		{name: "admitted", d: Decision{Allowed: true, RetryAfter: time.Hour}, want: 0},
		{name: "zero is raised to one", d: Decision{}, want: 1},
		{name: "one microsecond", d: Decision{RetryAfter: time.Microsecond}, want: 1},
		{name: "exactly one second", d: Decision{RetryAfter: time.Second}, want: 1},
		{name: "just over one second", d: Decision{RetryAfter: time.Second + time.Nanosecond}, want: 2},
		{name: "a day", d: Decision{RetryAfter: 24 * time.Hour}, want: 86400},
	}
	for _, tt := range tests {
		if got := tt.d.RetryAfterSeconds(); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestHeaderNamesAreCanonical: SetHeaders stores the fields under these names directly, which
// is only what Header.Set does (and what Get finds) when they are canonical.
func TestHeaderNamesAreCanonical(t *testing.T) {
	t.Parallel()
	for _, n := range []string{hdrLimit, hdrRemaining, hdrReset, hdrPolicy, hdrState, hdrRetryAfter} {
		if c := textproto.CanonicalMIMEHeaderKey(n); c != n {
			t.Errorf("%q is not canonical (%q)", n, c)
		}
	}
}
