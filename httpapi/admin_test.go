package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/keys"
)

const adminToken = "test-admin-token-0123456789"

// newAdminEnv is an API with only what /admin needs, on its own real Redis.
func newAdminEnv(t *testing.T, token string, authFailuresPerMinute int) *env {
	t.Helper()
	srv := redistest.Start(t)
	e := &env{t: t, redis: srv, rdb: srv.Client(t)}
	e.keys = keys.NewStore(e.rdb)
	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.AdminToken, cfg.AuthFailuresPerMinute = token, authFailuresPerMinute
	e.cfg = cfg
	if e.handler, err = app.NewAPI(cfg, e.rdb, slog.New(slog.DiscardHandler), nil, nil, prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	e.api = httptest.NewServer(e.handler)
	t.Cleanup(e.api.Close)
	return e
}

// raw sends a request with the given headers and no redirect following.
func (e *env) raw(method, path string, body io.Reader, hdr ...string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.api.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, header: res.Header, raw: b}
	_ = json.Unmarshal(b, &out.body)
	return out
}

func TestAdminIsNotFoundWithoutToken(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, "", 30)
	for _, c := range []struct{ method, path, auth string }{
		{"GET", "/admin/keys", ""},
		{"GET", "/admin/keys", "Bearer anything"},
		{"POST", "/admin/keys", "Bearer "},
		{"GET", "/admin/keys/key_x", ""},
		{"DELETE", "/admin/keys/key_x", ""},
		{"GET", "/admin/queues/", ""},
		{"GET", "/admin/queues/api/queues", ""},
		{"GET", "/admin", ""},
		{"PUT", "/admin/whatever", ""},
	} {
		t.Run(c.method+" "+c.path+" "+c.auth, func(t *testing.T) {
			wantProblem(t, e.raw(c.method, c.path, nil, "Authorization", c.auth), http.StatusNotFound, "not_found")
		})
	}
}

func TestAdminAuthentication(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, adminToken, 1000)
	_, apiKey := e.key(keys.CreateParams{})
	cases := []struct {
		name, method, path string
		hdr                []string
		status             int
		code               string
	}{
		{"no header", "GET", "/admin/keys", nil, 401, "invalid_key"},
		{"wrong bearer", "GET", "/admin/keys", []string{"Authorization", "Bearer nope"}, 401, "invalid_key"},
		{"token prefix", "GET", "/admin/keys", []string{"Authorization", "Bearer " + adminToken[:len(adminToken)-1]}, 401, "invalid_key"},
		{"token plus a byte", "GET", "/admin/keys", []string{"Authorization", "Bearer " + adminToken + "x"}, 401, "invalid_key"},
		{"an API key", "GET", "/admin/keys", []string{"Authorization", "Bearer " + apiKey}, 401, "invalid_key"},
		{"token without scheme", "GET", "/admin/keys", []string{"Authorization", adminToken}, 401, "invalid_key"},
		{"unknown path, no token", "GET", "/admin/nothing", nil, 401, "invalid_key"},
		{"wrong method, no token", "PUT", "/admin/keys", nil, 401, "invalid_key"},
		{"queue UI, no token", "GET", "/admin/queues/", nil, 401, "invalid_key"},
		{"queue API, wrong token", "GET", "/admin/queues/api/queues", []string{"Authorization", "Bearer nope"}, 401, "invalid_key"},
		{"bearer", "GET", "/admin/keys", []string{"Authorization", "Bearer " + adminToken}, 200, ""},
		{"bearer, any case", "GET", "/admin/keys", []string{"Authorization", "bearer " + adminToken}, 200, ""},
		{"unknown path", "GET", "/admin/nothing", []string{"Authorization", "Bearer " + adminToken}, 404, "not_found"},
		{"wrong method", "PUT", "/admin/keys", []string{"Authorization", "Bearer " + adminToken}, 405, "method_not_allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.raw(c.method, c.path, nil, c.hdr...)
			if c.code == "" {
				if r.status != c.status {
					t.Fatalf("status %d, want %d: %s", r.status, c.status, r.raw)
				}
				return
			}
			wantProblem(t, r, c.status, c.code)
			if c.status == 401 {
				got := r.header.Values("WWW-Authenticate")
				if len(got) != 2 || !strings.HasPrefix(got[0], "Bearer ") || !strings.HasPrefix(got[1], "Basic ") {
					t.Errorf("WWW-Authenticate %q, want a Bearer and a Basic challenge", got)
				}
			}
			if c.status == 405 && r.header.Get("Allow") != "GET, HEAD, POST" {
				t.Errorf("Allow %q", r.header.Get("Allow"))
			}
		})
	}

	t.Run("basic auth for browsers", func(t *testing.T) {
		req, _ := http.NewRequest("GET", e.api.URL+"/admin/keys", nil)
		req.SetBasicAuth("admin", adminToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		req.SetBasicAuth("admin", "nope")
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			t.Fatalf("wrong password: status %d", res.StatusCode)
		}
	})
}

func TestAdminFailedAuthenticationsAreLimited(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, adminToken, 3)
	for i := range 3 {
		wantProblem(t, e.raw("GET", "/admin/keys", nil, "Authorization", "Bearer wrong"), 401, "invalid_key")
		_ = i
	}
	r := e.raw("GET", "/admin/keys", nil, "Authorization", "Bearer wrong")
	wantProblem(t, r, 429, "rate_limited")
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// The right token still works: only failures are limited.
	if r := e.raw("GET", "/admin/keys", nil, "Authorization", "Bearer "+adminToken); r.status != 200 {
		t.Fatalf("right token after the limit: %d %s", r.status, r.raw)
	}
}

func TestAdminKeyLifecycle(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, adminToken, 30)
	ctx := context.Background()

	// create: exactly the object `api keys create` prints (docs/configuration.md#keys).
	r := e.do("POST", "/admin/keys", adminToken, map[string]any{"name": "acme", "daily_quota": 100})
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	var fields []string
	for f := range r.body {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	if diff := cmp.Diff([]string{"credits", "daily_quota", "id", "key", "name", "rate_limit_per_minute", "scopes", "webhook_secret"}, fields); diff != "" {
		t.Errorf("create fields (-want +got):\n%s", diff)
	}
	id, token, secret := r.body["id"].(string), r.body["key"].(string), r.body["webhook_secret"].(string)
	if r.header.Get("Location") != "/admin/keys/"+id || !strings.HasPrefix(id, keys.IDPrefix) ||
		!strings.HasPrefix(token, keys.TokenPrefix) || !strings.HasPrefix(secret, keys.SecretPrefix) {
		t.Fatalf("create: Location %q, body %s", r.header.Get("Location"), r.raw)
	}
	if diff := cmp.Diff(map[string]any{"name": "acme", "scopes": []any{"resolve"}, "rate_limit_per_minute": 60.0,
		"daily_quota": 100.0, "credits": nil}, map[string]any{"name": r.body["name"], "scopes": r.body["scopes"],
		"rate_limit_per_minute": r.body["rate_limit_per_minute"], "daily_quota": r.body["daily_quota"], "credits": r.body["credits"]}); diff != "" {
		t.Errorf("create values (-want +got):\n%s", diff)
	}
	if _, err := e.keys.Authenticate(ctx, token); err != nil {
		t.Fatalf("the created key does not authenticate: %v", err)
	}

	// list: no secrets.
	r = e.do("GET", "/admin/keys", adminToken, nil)
	list, _ := r.body["keys"].([]any)
	if r.status != 200 || len(list) != 1 {
		t.Fatalf("list: %d %s", r.status, r.raw)
	}
	item := list[0].(map[string]any)
	if item["id"] != id || item["key"] != nil || item["webhook_secret"] != nil || item["created_at"] == nil {
		t.Errorf("list item %v", item)
	}

	// show: the webhook secret, never the key.
	r = e.do("GET", "/admin/keys/"+id, adminToken, nil)
	if r.status != 200 || r.body["webhook_secret"] != secret || r.body["key"] != nil {
		t.Fatalf("show: %d %s", r.status, r.raw)
	}
	if s, _ := r.body["created_at"].(string); len(s) != len("2006-01-02T15:04:05.000Z") {
		t.Errorf("created_at %q, want RFC 3339 UTC with milliseconds", s)
	}

	// update: only the fields sent change; null clears.
	r = e.do("PATCH", "/admin/keys/"+id, adminToken, map[string]any{"rate_limit_per_minute": 0, "credits": 5})
	if r.status != 200 || r.body["rate_limit_per_minute"] != 0.0 || r.body["credits"] != 5.0 || r.body["daily_quota"] != 100.0 {
		t.Fatalf("update: %d %s", r.status, r.raw)
	}
	r = e.do("PATCH", "/admin/keys/"+id, adminToken, map[string]any{"daily_quota": nil})
	if r.status != 200 || r.body["daily_quota"] != nil || r.body["credits"] != 5.0 {
		t.Fatalf("update to null: %d %s", r.status, r.raw)
	}
	if k, _ := e.keys.Get(ctx, id); k.DailyQuota != nil || k.Credits == nil || *k.Credits != 5 || k.RateLimitPerMinute != 0 {
		t.Errorf("stored key %+v", k)
	}

	// rotate: a new secret; the old one signs for the grace period.
	before := time.Now()
	r = e.do("POST", "/admin/keys/"+id+"/rotate-webhook-secret", adminToken, map[string]any{"grace": "1h"})
	newSecret, _ := r.body["webhook_secret"].(string)
	if r.status != 200 || newSecret == secret || !strings.HasPrefix(newSecret, keys.SecretPrefix) {
		t.Fatalf("rotate: %d %s", r.status, r.raw)
	}
	until, err := time.Parse(time.RFC3339, r.body["previous_secret_valid_until"].(string))
	if err != nil || until.Before(before.Add(time.Hour-time.Second)) || until.After(time.Now().Add(time.Hour+time.Second)) {
		t.Errorf("previous_secret_valid_until %v (%v)", r.body["previous_secret_valid_until"], err)
	}
	k, _ := e.keys.Get(ctx, id)
	if diff := cmp.Diff([]string{newSecret, secret}, k.SigningSecrets(time.Now())); diff != "" {
		t.Errorf("signing secrets during the grace (-want +got):\n%s", diff)
	}
	// Without a body the CLI's default grace (24 h) applies.
	r = e.raw("POST", "/admin/keys/"+id+"/rotate-webhook-secret", nil, "Authorization", "Bearer "+adminToken)
	if until, _ := time.Parse(time.RFC3339, r.body["previous_secret_valid_until"].(string)); r.status != 200 || until.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("rotate without a body: %d %s", r.status, r.raw)
	}

	// revoke: the key stops working; revoking again (either form) keeps the first time.
	r = e.do("POST", "/admin/keys/"+id+"/revoke", adminToken, nil)
	revokedAt, _ := r.body["revoked_at"].(string)
	if r.status != 200 || revokedAt == "" {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	if _, err := e.keys.Authenticate(ctx, token); err == nil {
		t.Fatal("a revoked key still authenticates")
	}
	r = e.do("DELETE", "/admin/keys/"+id, adminToken, nil)
	if r.status != 200 || r.body["revoked_at"] != revokedAt {
		t.Fatalf("DELETE after revoke: %d %s", r.status, r.raw)
	}
}

func TestAdminKeyErrors(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, adminToken, 30)
	c, _ := e.key(keys.CreateParams{})
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code, field        string
	}{
		{"create without name", "POST", "/admin/keys", map[string]any{}, 400, "invalid_request", "name"},
		{"create unknown field", "POST", "/admin/keys", map[string]any{"name": "x", "admin": true}, 400, "invalid_request", ""},
		{"create unknown scope", "POST", "/admin/keys", map[string]any{"name": "x", "scopes": []string{"root"}}, 400, "invalid_request", "scopes"},
		{"create negative rate", "POST", "/admin/keys", map[string]any{"name": "x", "rate_limit_per_minute": -1}, 400, "invalid_request", "rate_limit_per_minute"},
		{"create negative credits", "POST", "/admin/keys", map[string]any{"name": "x", "credits": -5}, 400, "invalid_request", "credits"},
		{"create rate as string", "POST", "/admin/keys", `{"name":"x","rate_limit_per_minute":"60"}`, 400, "invalid_request", ""},
		{"create trailing data", "POST", "/admin/keys", `{"name":"x"} {}`, 400, "invalid_request", ""},
		{"show unknown", "GET", "/admin/keys/key_doesnotexist", nil, 404, "not_found", ""},
		{"show malformed", "GET", "/admin/keys/NOT-A-KEY", nil, 404, "not_found", ""},
		{"update unknown", "PATCH", "/admin/keys/key_doesnotexist", map[string]any{"credits": 1}, 404, "not_found", ""},
		{"update rate null", "PATCH", "/admin/keys/" + c.ID, map[string]any{"rate_limit_per_minute": nil}, 400, "invalid_request", "rate_limit_per_minute"},
		{"update negative quota", "PATCH", "/admin/keys/" + c.ID, map[string]any{"daily_quota": -1}, 400, "invalid_request", "daily_quota"},
		{"revoke unknown", "POST", "/admin/keys/key_doesnotexist/revoke", nil, 404, "not_found", ""},
		{"rotate negative grace", "POST", "/admin/keys/" + c.ID + "/rotate-webhook-secret", map[string]any{"grace": "-1h"}, 400, "invalid_request", "grace"},
		{"rotate bad grace", "POST", "/admin/keys/" + c.ID + "/rotate-webhook-secret", map[string]any{"grace": "tomorrow"}, 400, "invalid_request", "grace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, adminToken, tc.body)
			wantProblem(t, r, tc.status, tc.code)
			if tc.field != "" {
				errs, _ := r.body["errors"].([]any)
				if len(errs) != 1 || errs[0].(map[string]any)["field"] != tc.field {
					t.Errorf("errors %v, want one about %s", r.body["errors"], tc.field)
				}
			}
		})
	}
	t.Run("create as form", func(t *testing.T) {
		r := e.raw("POST", "/admin/keys", strings.NewReader("name=x"), "Authorization", "Bearer "+adminToken,
			"Content-Type", "application/x-www-form-urlencoded")
		wantProblem(t, r, 415, "unsupported_media_type")
	})
	// None of the refused requests changed anything.
	if all, err := e.keys.List(context.Background()); err != nil || len(all) != 1 {
		t.Errorf("keys after refused requests: %d (%v)", len(all), err)
	}
}

func TestAdminQueuesUI(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, adminToken, 30)
	if _, err := asynq.NewClientFromRedisClient(e.rdb).Enqueue(asynq.NewTask("test:task", nil), asynq.Queue("adminq")); err != nil {
		t.Fatal(err)
	}
	auth := []string{"Authorization", "Bearer " + adminToken}

	r := e.raw("GET", "/admin/queues", nil, auth...)
	if r.status != http.StatusMovedPermanently || r.header.Get("Location") != "/admin/queues/" {
		t.Fatalf("/admin/queues: %d Location %q", r.status, r.header.Get("Location"))
	}
	r = e.raw("GET", "/admin/queues/", nil, auth...)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.raw), "<html") {
		t.Fatalf("UI page: %d %s %.200s", r.status, r.header.Get("Content-Type"), r.raw)
	}
	r = e.raw("GET", "/admin/queues/api/queues", nil, auth...)
	if r.status != 200 {
		t.Fatalf("UI API: %d %s", r.status, r.raw)
	}
	var queues struct {
		Queues []struct {
			Queue string `json:"queue"`
			Size  int    `json:"size"`
		} `json:"queues"`
	}
	if err := json.Unmarshal(r.raw, &queues); err != nil || len(queues.Queues) != 1 ||
		queues.Queues[0].Queue != "adminq" || queues.Queues[0].Size != 1 {
		t.Fatalf("UI API queues: %s (%v)", r.raw, err)
	}
}
