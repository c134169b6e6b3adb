package httpapi_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
)

func TestRateLimitHeadersAndExhaustion(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(3), DailyQuota: ptr[int64](10)})
	for i := 0; i < 3; i++ {
		r := e.do("GET", "/v1/providers", tok, nil)
		if r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
		if got := r.header.Get("X-RateLimit-Remaining"); got != strconv.Itoa(2-i) {
			t.Errorf("request %d: remaining %q", i, got)
		}
		if r.header.Get("X-RateLimit-Limit") != "3" {
			t.Errorf("limit %q", r.header.Get("X-RateLimit-Limit"))
		}
		reset, _ := strconv.ParseInt(r.header.Get("X-RateLimit-Reset"), 10, 64)
		if now := time.Now().Unix(); reset < now || reset > now+61 {
			t.Errorf("X-RateLimit-Reset %d is not absolute unix seconds within the minute", reset)
		}
		if pol := r.header.Get("RateLimit-Policy"); !strings.Contains(pol, `"minute";q=3;w=60`) || !strings.Contains(pol, `"day";q=10`) {
			t.Errorf("RateLimit-Policy %q", pol)
		}
		if rl := r.header.Get("RateLimit"); !strings.HasPrefix(rl, `"minute";r=`+strconv.Itoa(2-i)+";t=") {
			t.Errorf("RateLimit %q", rl)
		}
	}
	r := e.do("GET", "/v1/providers", tok, nil)
	wantProblem(t, r, 429, "rate_limited")
	ra, _ := strconv.Atoi(r.header.Get("Retry-After"))
	if ra < 1 || ra > 60 || r.body["retry_after"] != float64(ra) {
		t.Errorf("Retry-After %q, retry_after %v", r.header.Get("Retry-After"), r.body["retry_after"])
	}
	if r.header.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("remaining on 429: %q", r.header.Get("X-RateLimit-Remaining"))
	}
	// Polls count too, and a rejected request records nothing: still limited, same window.
	wantProblem(t, e.do("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000", tok, nil), 429, "rate_limited")
}

func TestDailyQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0), DailyQuota: ptr[int64](2)})
	// Rejected requests (bad body) and polls do not use the quota.
	wantProblem(t, e.do("POST", "/v1/resolve", tok, `{}`), 400, "invalid_request")
	wantProblem(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://example.com/"}), 422, "unsupported_link")
	for i := 0; i < 2; i++ {
		if r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/q" + strconv.Itoa(i)}); r.status != 202 {
			t.Fatalf("resolve %d: %d %s", i, r.status, r.raw)
		}
	}
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/q9"})
	wantProblem(t, r, 429, "quota_exceeded")
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	ra, _ := strconv.ParseFloat(r.header.Get("Retry-After"), 64)
	if want := midnight.Sub(now).Seconds(); ra < want-5 || ra > want+5 {
		t.Errorf("Retry-After %v, want about %v (until 00:00 UTC)", ra, want)
	}
	// Unlimited per-minute: no X-RateLimit fields, but the day policy is announced.
	if r.header.Get("X-RateLimit-Limit") != "" || !strings.Contains(r.header.Get("RateLimit-Policy"), `"day";q=2`) {
		t.Errorf("headers %v", r.header)
	}
	acc := e.do("GET", "/v1/account", tok, nil)
	if acc.status != 200 || acc.body["daily_used"] != 2.0 || acc.body["daily_quota"] != 2.0 {
		t.Errorf("account %d %s", acc.status, acc.raw)
	}
}

// QUOTA_RETRY_AFTER_MAX caps Retry-After and retry_after of quota_exceeded (docs/limits.md#capping-retry-after).
func TestQuotaRetryAfterMax(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{tweakCfg: func(c *config.Config) { c.QuotaRetryAfterMax = 45 * time.Second }})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(10), DailyQuota: ptr[int64](0)})
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/cap"})
	wantProblem(t, r, 429, "quota_exceeded")
	// At most the cap (less only in the last 45 s before midnight).
	ra, _ := strconv.Atoi(r.header.Get("Retry-After"))
	if ra < 1 || ra > 45 || r.body["retry_after"] != float64(ra) {
		t.Errorf("Retry-After %q, retry_after %v; want the same, at most 45", r.header.Get("Retry-After"), r.body["retry_after"])
	}
	// The day entry still tells when the quota renews.
	if !strings.Contains(r.header.Get("RateLimit"), `"day";r=0;t=`) {
		t.Errorf("RateLimit %q", r.header.Get("RateLimit"))
	}
}

// Two API replicas sharing one Redis admit exactly the limit under concurrency.
func TestLimitExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	// A second, independently built handler: its own limiter, same Redis.
	other := newEnvOn(t, e)
	const limit = 25
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(limit)})
	urls := []string{e.api.URL, other.api.URL}
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req, _ := http.NewRequest("GET", urls[i%2]+"/v1/providers", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			switch res.StatusCode {
			case 200:
				ok.Add(1)
			case 429:
				limited.Add(1)
			default:
				t.Errorf("status %d", res.StatusCode)
			}
		}(i)
	}
	wg.Wait()
	if ok.Load() != limit || limited.Load() != 60-limit {
		t.Fatalf("admitted %d, limited %d; want exactly %d admitted", ok.Load(), limited.Load(), limit)
	}
}

func TestFailedAuthLimitedPerAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	// AUTH_FAILURES_PER_MINUTE defaults to 30.
	for i := 0; i < 30; i++ {
		wantProblem(t, e.do("GET", "/v1/providers", "sk_live_wrong", nil), 401, "invalid_key")
	}
	r := e.do("GET", "/v1/providers", "sk_live_wrong", nil)
	wantProblem(t, r, 429, "rate_limited")
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	// A valid key from the same address still works.
	if r := e.do("GET", "/v1/providers", tok, nil); r.status != 200 {
		t.Errorf("valid key after failures: %d", r.status)
	}
}
