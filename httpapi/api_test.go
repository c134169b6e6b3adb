package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

func TestResolveEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true})
	_, tok := e.key(keys.CreateParams{})
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/abc"})
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	id, _ := r.body["job_id"].(string)
	if r.body["status"] != "queued" || r.header.Get("Location") != "/v1/jobs/"+id || r.body["poll_url"] != "/v1/jobs/"+id {
		t.Fatalf("bad 202: %v %v", r.header, r.body)
	}
	if _, ok := r.body["queue_position"].(float64); !ok {
		t.Errorf("queue_position missing: %s", r.raw)
	}
	job := e.waitJob(tok, id)
	if job["status"] != "done" || job["target_url"] != "https://example.com/dest/abc" {
		t.Fatalf("job = %v", job)
	}
	if job["provider"] != "short" || job["tier"] != "standard" || job["error"] != nil || job["balance"] != nil {
		t.Errorf("job = %v", job)
	}
	hops := job["hops"].([]any)
	if len(hops) != 2 || hops[0].(map[string]any)["kind"] != "start" {
		t.Errorf("hops = %v", hops)
	}
	for _, f := range []string{"created_at", "updated_at", "completed_at"} {
		s, _ := job[f].(string)
		if len(s) != len("2006-01-02T15:04:05.000Z") || !strings.HasSuffix(s, "Z") {
			t.Errorf("%s = %q, want RFC 3339 UTC with milliseconds", f, s)
		}
	}

	// The result is cached: the next request answers 200 at once, with no job.
	r = e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://SHO.RT/abc#frag"})
	if r.status != http.StatusOK || r.body["cached"] != true || r.body["job_id"] != nil ||
		r.body["target_url"] != "https://example.com/dest/abc" || r.body["credits_charged"] != 0.0 || r.body["status"] != "done" {
		t.Fatalf("cached answer: %d %s", r.status, r.raw)
	}
}

func TestJobOwnership(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, a := e.key(keys.CreateParams{})
	_, b := e.key(keys.CreateParams{})
	r := e.do("POST", "/v1/resolve", a, map[string]any{"url": "https://sho.rt/x"})
	if r.status != 202 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	id := r.body["job_id"].(string)
	if got := e.do("GET", "/v1/jobs/"+id, a, nil); got.status != 200 || got.body["status"] != "queued" {
		t.Fatalf("owner poll: %d %s", got.status, got.raw)
	}
	wantProblem(t, e.do("GET", "/v1/jobs/"+id, b, nil), 404, "not_found")
	wantProblem(t, e.do("GET", "/v1/jobs/not-a-uuid", a, nil), 404, "not_found")
	wantProblem(t, e.do("GET", "/v1/jobs/"+strings.ToUpper(id), a, nil), 404, "not_found")
	wantProblem(t, e.do("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000", a, nil), 404, "not_found")
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c, tok := e.key(keys.CreateParams{})
	_, noScope := e.key(keys.CreateParams{Scopes: []string{}})
	body := map[string]any{"url": "https://sho.rt/x"}
	for name, h := range map[string]string{
		"missing": "", "not bearer": "Basic " + tok, "malformed": "Bearer sk_live_nope",
		"unknown": "Bearer sk_live_aaaaaaaaaaaaaaaa_" + strings.Repeat("A", 43),
	} {
		t.Run(name, func(t *testing.T) {
			r := e.do("POST", "/v1/resolve", "", body, "Authorization", h)
			wantProblem(t, r, 401, "invalid_key")
			want := `Bearer realm="linkhop", error="invalid_token"`
			if h == "" {
				want = `Bearer realm="linkhop"`
			}
			if got := r.header.Get("WWW-Authenticate"); got != want {
				t.Errorf("WWW-Authenticate %q, want %q", got, want)
			}
		})
	}
	wantProblem(t, e.do("POST", "/v1/resolve", noScope, body), 403, "forbidden_scope")
	// A key without the resolve scope may still read the providers.
	if r := e.do("GET", "/v1/providers", noScope, nil); r.status != 200 {
		t.Errorf("providers without scope: %d", r.status)
	}
	if _, err := e.keys.Revoke(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, e.do("POST", "/v1/resolve", tok, body), 401, "invalid_key")
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	long := "https://sho.rt/" + strings.Repeat("a", 2049-len("https://sho.rt/"))
	cases := []struct {
		name      string
		body      any
		hdr       []string
		status    int
		code      string
		wantField string
	}{
		{"not json", "url=x", []string{"Content-Type", "text/plain"}, 415, "unsupported_media_type", ""},
		{"no content type", `{"url":"https://sho.rt/x"}`, []string{"Content-Type", ""}, 415, "unsupported_media_type", ""},
		{"too large", `{"url":"` + strings.Repeat("a", 70000) + `"}`, nil, 413, "payload_too_large", ""},
		{"malformed", `{"url":`, nil, 400, "invalid_request", ""},
		{"syntax", `{"url" "x"}`, nil, 400, "invalid_request", ""},
		{"empty", ``, nil, 400, "invalid_request", ""},
		{"array", `[]`, nil, 400, "invalid_request", ""},
		{"null", `null`, nil, 400, "invalid_request", ""},
		{"unknown field", `{"url":"https://sho.rt/x","extra":1}`, nil, 400, "invalid_request", "extra"},
		{"trailing data", `{"url":"https://sho.rt/x"} {}`, nil, 400, "invalid_request", ""},
		{"missing url", `{}`, nil, 400, "invalid_request", "url"},
		{"empty url", `{"url":""}`, nil, 400, "invalid_request", "url"},
		{"url not string", `{"url":5}`, nil, 400, "invalid_request", "url"},
		{"url too long", map[string]any{"url": long}, nil, 400, "invalid_request", "url"},
		{"relative url", `{"url":"sho.rt/x"}`, nil, 400, "invalid_request", "url"},
		{"userinfo", `{"url":"https://user:pw@sho.rt/x"}`, nil, 400, "invalid_request", "url"},
		{"control char", `{"url":"https://sho.rt/a\u0000b"}`, nil, 400, "invalid_request", "url"},
		{"no host", `{"url":"https:///x"}`, nil, 400, "invalid_request", "url"},
		{"host not UTF-8", `{"url":"https://sho%ff.rt/x"}`, nil, 400, "invalid_request", "url"},
		{"ftp", `{"url":"ftp://sho.rt/x"}`, nil, 422, "unsupported_link", ""},
		{"javascript", `{"url":"javascript://sho.rt/x"}`, nil, 422, "unsupported_link", ""},
		{"not a provider", `{"url":"https://example.com/x"}`, nil, 422, "unsupported_link", ""},
		{"ip literal", `{"url":"http://127.0.0.1/x"}`, nil, 422, "unsupported_link", ""},
		{"webhook http", `{"url":"https://sho.rt/x","webhook_url":"http://hooks.example.com/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook private ip", `{"url":"https://sho.rt/x","webhook_url":"https://10.0.0.1/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook loopback", `{"url":"https://sho.rt/x","webhook_url":"https://[::1]/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook metadata", `{"url":"https://sho.rt/x","webhook_url":"https://169.254.169.254/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook cgnat", `{"url":"https://sho.rt/x","webhook_url":"https://100.64.0.1/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook internal name", `{"url":"https://sho.rt/x","webhook_url":"https://api.internal/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook localhost", `{"url":"https://sho.rt/x","webhook_url":"https://localhost/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook .local", `{"url":"https://sho.rt/x","webhook_url":"https://printer.local/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook userinfo", `{"url":"https://sho.rt/x","webhook_url":"https://u:p@hooks.example.com/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook not string", `{"url":"https://sho.rt/x","webhook_url":1}`, nil, 400, "invalid_request", "webhook_url"},
		{"webhook host not UTF-8", `{"url":"https://sho.rt/x","webhook_url":"https://hooks%ff.example.com/"}`, nil, 400, "invalid_request", "webhook_url"},
		{"idempotency too long", map[string]any{"url": "https://sho.rt/x", "idempotency_key": strings.Repeat("k", 129)}, nil, 400, "invalid_request", "idempotency_key"},
		{"idempotency empty", `{"url":"https://sho.rt/x","idempotency_key":""}`, nil, 400, "invalid_request", "idempotency_key"},
		{"idempotency non-ascii", `{"url":"https://sho.rt/x","idempotency_key":"ключ"}`, nil, 400, "invalid_request", "idempotency_key"},
		{"idempotency header bad", `{"url":"https://sho.rt/x"}`, []string{"Idempotency-Key", strings.Repeat("k", 129)}, 400, "invalid_request", "Idempotency-Key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := e.do("POST", "/v1/resolve", tok, tc.body, tc.hdr...)
			wantProblem(t, r, tc.status, tc.code)
			if tc.wantField != "" {
				errs, _ := r.body["errors"].([]any)
				found := false
				for _, fe := range errs {
					m := fe.(map[string]any)
					if m["field"] == tc.wantField && m["reason"] != "" {
						found = true
					}
				}
				if !found {
					t.Errorf("errors %v lack field %s", errs, tc.wantField)
				}
			}
		})
	}
	// Nothing was created by any of them.
	n, err := e.rdb.Keys(context.Background(), "*:job:*").Result()
	if err != nil || len(n) != 0 {
		t.Errorf("jobs created by bad requests: %v %v", n, err)
	}
}

func TestRoutesAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	wantProblem(t, e.do("GET", "/v2/nothing", tok, nil), 404, "not_found")
	wantProblem(t, e.do("GET", "/", "", nil), 404, "not_found")
	r := e.do("GET", "/v1/resolve", tok, nil)
	wantProblem(t, r, 405, "method_not_allowed")
	if r.header.Get("Allow") != "POST" {
		t.Errorf("Allow = %q", r.header.Get("Allow"))
	}
	r = e.do("DELETE", "/v1/jobs/00000000-0000-4000-8000-000000000000", tok, nil)
	wantProblem(t, r, 405, "method_not_allowed")
	if r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow = %q", r.header.Get("Allow"))
	}
	// Request ids: a sane one is echoed, a hostile one replaced.
	r = e.do("GET", "/healthz", "", nil, "X-Request-Id", "abc-123")
	if r.status != 200 || r.header.Get("X-Request-Id") != "abc-123" {
		t.Errorf("healthz %d, id %q", r.status, r.header.Get("X-Request-Id"))
	}
	r = e.do("GET", "/healthz", "", nil, "X-Request-Id", "evil\"id with spaces")
	if got := r.header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Errorf("hostile request id echoed: %q", got)
	}
	if r := e.do("GET", "/readyz", "", nil); r.status != 200 {
		t.Errorf("readyz %d", r.status)
	}
	r = e.do("GET", "/metrics", "", nil)
	if r.status != 200 || !strings.Contains(string(r.raw), "linkhop_build_info{") {
		t.Errorf("metrics %d:\n%.1000s", r.status, r.raw)
	}
	problems, err := promlint.New(bytes.NewReader(r.raw)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestProviders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	r := e.do("GET", "/v1/providers", tok, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	ps := r.body["providers"].([]any)
	seen := map[string]bool{}
	for _, p := range ps {
		m := p.(map[string]any)
		seen[m["provider"].(string)] = true
		if m["tier"] != "standard" && m["tier"] != "premium" {
			t.Errorf("tier %v", m["tier"])
		}
		if _, ok := m["latency"].(string); !ok {
			t.Errorf("latency %v", m["latency"])
		}
		if hs, _ := m["hosts"].([]any); len(hs) == 0 {
			t.Errorf("hosts %v", m["hosts"])
		}
	}
	if !seen["short"] || len(ps) < 10 {
		t.Errorf("providers = %v", seen)
	}
}

func TestEnqueueFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	// Make asynq's enqueue fail after the record is written: its pending list has the wrong type.
	if err := e.rdb.Set(context.Background(), "asynq:{resolve}:pending", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/x"})
	wantProblem(t, r, 503, "service_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if ks, _ := e.rdb.Keys(context.Background(), "*:job:*").Result(); len(ks) != 0 {
		t.Errorf("half-made job left behind: %v", ks)
	}
}

func TestRedisDownIs503(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	e.redis.Stop()
	wantProblem(t, e.do("GET", "/v1/providers", tok, nil), 503, "service_unavailable")
	wantProblem(t, e.do("GET", "/readyz", "", nil), 503, "service_unavailable")
	if r := e.do("GET", "/healthz", "", nil); r.status != 200 {
		t.Errorf("healthz during outage: %d", r.status)
	}
}

func TestGuardRefusesInternalRedirect(t *testing.T) {
	t.Parallel()
	// The shortener redirects to 127.0.0.2, listed as a provider host so it would be fetched;
	// only 127.0.0.1/32 is allowed for the test, so the guard must refuse the dial.
	e := newEnv(t, envOptions{
		worker: true,
		shortFn: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.2:9/next", http.StatusFound)
		},
		extra: []resolve.Provider{{ID: "internal", Label: "Internal", Hosts: []string{"127.0.0.2"}, Tier: "standard"}},
	})
	_, tok := e.key(keys.CreateParams{})
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/go"})
	if r.status != 202 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	job := e.waitJob(tok, r.body["job_id"].(string))
	if job["status"] != "failed" || job["error"] != "resolve_failed" {
		t.Fatalf("job = %v", job)
	}
	if d, _ := job["error_detail"].(string); !strings.Contains(strings.ToLower(d), "block") && !strings.Contains(strings.ToLower(d), "internal") && !strings.Contains(strings.ToLower(d), "not allowed") {
		t.Errorf("error_detail %q does not say the address was blocked", d)
	}
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writers of a server.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestKeysNeverLogged(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	e := newEnv(t, envOptions{worker: true, logs: &logs})
	c, tok := e.key(keys.CreateParams{})
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/log"})
	e.waitJob(tok, r.body["job_id"].(string))
	e.do("GET", "/v1/providers", tok+"x", nil)
	e.do("GET", "/v1/providers", tok, nil, "X-Request-Id", "trace-1")
	out := logs.String()
	secretPart := tok[len("sk_live_")+17:]
	if strings.Contains(out, tok) || strings.Contains(out, secretPart) || strings.Contains(out, c.WebhookSecret()) {
		t.Fatalf("a secret reached the logs:\n%s", out)
	}
	if !strings.Contains(out, `"request_id":"trace-1"`) || !strings.Contains(out, c.ID) {
		t.Errorf("access log lacks request id or key id:\n%s", out)
	}
}

func TestHeadOnGetRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true})
	_, tok := e.key(keys.CreateParams{})
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/head"})
	id, _ := r.body["job_id"].(string)
	e.waitJob(tok, id)
	for _, path := range []string{"/v1/jobs/" + id, "/v1/providers", "/v1/account"} {
		h := e.do("HEAD", path, tok, nil)
		if h.status != 200 || len(h.raw) != 0 || h.header.Get("X-RateLimit-Limit") == "" || !strings.HasPrefix(h.header.Get("Content-Type"), "application/json") {
			t.Errorf("HEAD %s: %d, %d body bytes, headers %v", path, h.status, len(h.raw), h.header)
		}
	}
	if h := e.do("HEAD", "/v1/jobs/"+id, "", nil); h.status != 401 || h.header.Get("WWW-Authenticate") == "" {
		t.Errorf("HEAD without a key: %d %v", h.status, h.header)
	}
	if h := e.do("HEAD", "/v1/resolve", tok, nil); h.status != 405 {
		t.Errorf("HEAD /v1/resolve: %d", h.status)
	}
}

// TestClientAddressBehindProxies: the failed-authentication limit counts per client address;
// forwarding headers name the client only when the peer is a trusted proxy.
func TestClientAddressBehindProxies(t *testing.T) {
	t.Parallel()
	bad := "Bearer sk_live_aaaaaaaaaaaaaaaa_" + strings.Repeat("A", 43)
	fail := func(e *env, xff string) int {
		return e.do("GET", "/v1/account", "", nil, "Authorization", bad, "X-Forwarded-For", xff).status
	}
	// No trusted proxies: spoofing X-Forwarded-For does not escape the limit.
	plain := newEnv(t, envOptions{tweakCfg: func(c *config.Config) { c.AuthFailuresPerMinute = 3 }})
	for i := range 3 {
		if st := fail(plain, fmt.Sprintf("198.51.100.%d", i+1)); st != 401 {
			t.Fatalf("failure %d: %d", i+1, st)
		}
	}
	if st := fail(plain, "198.51.100.99"); st != 429 {
		t.Errorf("a spoofed address escaped the limit: %d", st)
	}
	// The test client is the trusted proxy: each forwarded client has its own budget, and a
	// client-written prefix of the header is ignored.
	behind := newEnv(t, envOptions{tweakCfg: func(c *config.Config) {
		c.AuthFailuresPerMinute = 3
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}})
	for i := range 3 {
		if st := fail(behind, fmt.Sprintf("203.0.113.%d, 198.51.100.1", i)); st != 401 {
			t.Fatalf("failure %d: %d", i+1, st)
		}
	}
	if st := fail(behind, "6.6.6.6, 198.51.100.1"); st != 429 {
		t.Errorf("198.51.100.1 past its limit: %d", st)
	}
	if st := fail(behind, "198.51.100.2"); st != 401 {
		t.Errorf("another client behind the proxy was limited: %d", st)
	}
}
