package httpapi_test

import (
	"net/http"
	"regexp"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/linkhop/linkhop/keys"
)

// fieldNames lists the members of a JSON object, sorted.
func fieldNames(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestAccount(t *testing.T) {
	t.Parallel()
	e := premiumEnv(t, envOptions{})
	cases := []struct {
		name   string
		params keys.CreateParams
		want   map[string]any // key_id and providers are checked apart
	}{
		{
			"defaults",
			keys.CreateParams{Name: "plain"},
			map[string]any{
				"name": "plain", "scopes": []any{"resolve"}, "rate_limit_per_minute": 60.0,
				"daily_quota": nil, "daily_used": 0.0, "balance": nil, "telegram_id": 0.0, "subscription_until": nil,
			},
		},
		{
			"limits and credits",
			keys.CreateParams{Name: "metered", RateLimit: ptr(0), DailyQuota: ptr[int64](7), Credits: ptr[int64](9)},
			map[string]any{
				"name": "metered", "scopes": []any{"resolve"}, "rate_limit_per_minute": 0.0,
				"daily_quota": 7.0, "daily_used": 1.0, "balance": 8.0, "telegram_id": 0.0, "subscription_until": nil,
			},
		},
		{
			"no scopes",
			keys.CreateParams{Name: "reader", Scopes: []string{}},
			map[string]any{
				"name": "reader", "scopes": []any{}, "rate_limit_per_minute": 60.0,
				"daily_quota": nil, "daily_used": 0.0, "balance": nil, "telegram_id": 0.0, "subscription_until": nil,
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, tok := e.key(tc.params)
			// One accepted resolve shows in the daily_used of a key with a quota.
			if tc.params.DailyQuota != nil {
				e.accepted(tok, map[string]any{"url": "https://sho.rt/" + c.ID})
			}
			r := e.do("GET", "/v1/account", tok, nil)
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("content type %q", ct)
			}
			if r.body["key_id"] != c.ID {
				t.Errorf("key_id %v, want %s", r.body["key_id"], c.ID)
			}
			ps, _ := r.body["providers"].([]any)
			got := map[string]any{}
			for k, v := range r.body {
				if k != "key_id" && k != "providers" {
					got[k] = v
				}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("account (-want +got):\n%s", d)
			}
			tiers := map[string]any{}
			for _, p := range ps {
				m := p.(map[string]any)
				if d := cmp.Diff([]string{"family", "label", "provider", "tier"}, fieldNames(m)); d != "" {
					t.Errorf("account provider fields (-want +got):\n%s", d)
				}
				tiers[m["provider"].(string)] = m["tier"]
			}
			if tiers["short"] != "standard" || tiers["prem"] != "premium" {
				t.Errorf("account providers %v", tiers)
			}
		})
	}
}

func TestProvidersFieldsAndMeasuredLatency(t *testing.T) {
	t.Parallel()
	e := premiumEnv(t, envOptions{worker: true})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0), Scopes: []string{"resolve"}})
	e.waitJob(tok, e.accepted(tok, map[string]any{"url": "http://sho.rt/lat"}))
	r := e.do("GET", "/v1/providers", tok, nil)
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if d := cmp.Diff([]string{"providers"}, fieldNames(r.body)); d != "" {
		t.Errorf("body fields (-want +got):\n%s", d)
	}
	byID := map[string]map[string]any{}
	for _, p := range r.body["providers"].([]any) {
		m := p.(map[string]any)
		if d := cmp.Diff([]string{"family", "hosts", "label", "latency", "provider", "tier"}, fieldNames(m)); d != "" {
			t.Errorf("provider fields (-want +got):\n%s", d)
		}
		byID[m["provider"].(string)] = m
	}
	if d := cmp.Diff(map[string]any{"provider": "prem", "label": "Premium", "hosts": []any{"pre.mi"}, "tier": "premium", "family": "redirect", "latency": "unknown"}, byID["prem"]); d != "" {
		t.Errorf("premium provider (-want +got):\n%s", d)
	}
	// A measured provider reports its median in the same human form as the built-in guesses.
	if lat, _ := byID["short"]["latency"].(string); !regexp.MustCompile(`^~[1-9][0-9]*(ms|(\.[0-9])?s)$`).MatchString(lat) {
		t.Errorf("measured latency %q, want like ~40ms or ~1.2s", lat)
	}
}

func TestCachedAnswerShape(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0), Credits: ptr[int64](3), DailyQuota: ptr[int64](10)})
	e.waitJob(tok, e.accepted(tok, map[string]any{"url": "http://sho.rt/shape"}))
	// Another key gets the shared cache too.
	_, other := e.key(keys.CreateParams{})
	for name, tk := range map[string]string{"same key": tok, "other key": other} {
		t.Run(name, func(t *testing.T) {
			r := e.do("POST", "/v1/resolve", tk, map[string]any{"url": "http://sho.rt/shape"})
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			balance := any(nil)
			if tk == tok {
				balance = 2.0
			}
			want := map[string]any{
				"job_id": nil, "status": "done", "url": "http://sho.rt/shape", "target_url": "https://example.com/dest/shape",
				"provider": "short", "tier": "standard", "credits_charged": 0.0, "cached": true, "balance": balance,
			}
			if d := cmp.Diff(want, r.body); d != "" {
				t.Errorf("cached answer (-want +got):\n%s", d)
			}
			if r.header.Get("Location") != "" || r.header.Get("Idempotent-Replayed") != "" {
				t.Errorf("cached answer headers %v", r.header)
			}
		})
	}
	// No job was made for the cached answers (the first request's job only), and they count
	// against the daily quota as accepted requests.
	if rec, _ := e.jobCount(); rec != 1 {
		t.Errorf("%d job records, want 1", rec)
	}
	if acc := e.do("GET", "/v1/account", tok, nil); acc.body["daily_used"] != 2.0 {
		t.Errorf("daily_used %v, want 2", acc.body["daily_used"])
	}
}
