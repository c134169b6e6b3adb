package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/linkhop/linkhop/httpapi"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/webhooks"
)

// spec is the served OpenAPI document, loaded and checked once for all tests.
type spec struct {
	doc    *openapi3.T
	router routers.Router
}

var (
	specOnce sync.Once
	specVal  *spec
	specErr  error
)

func loadSpec(t *testing.T) *spec {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(httpapi.OpenAPI())
		if err != nil {
			specErr = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = err
			return
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			specErr = err
			return
		}
		specVal = &spec{doc: doc, router: r}
	})
	if specErr != nil {
		t.Fatalf("the OpenAPI document: %v", specErr)
	}
	return specVal
}

func init() {
	// The queue UI's page is text/html, which kin-openapi has no decoder for; as a string it
	// can be checked like any other answer.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
}

var filterOptions = &openapi3filter.Options{
	// Authentication is the server's business; the document only says which scheme applies.
	AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	// A status the document does not list for the operation is drift, not an extension.
	IncludeResponseStatus: true,
	MultiError:            true,
}

// exchange is one real request and the handlers' answer.
type exchange struct {
	method, path string
	reqHeader    http.Header
	reqBody      []byte
	status       int
	header       http.Header
	body         []byte
}

// noRedirects is the client of call: a redirect is an answer to validate, not to follow.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// call sends a request to e and records the exchange.
func (e *env) call(method, path, token string, body any, hdr ...string) exchange {
	e.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	default:
		raw, _ = json.Marshal(b)
	}
	req, err := http.NewRequest(method, e.api.URL+path, bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	x := exchange{method: method, path: path, reqHeader: req.Header.Clone(), reqBody: raw}
	res, err := noRedirects.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	x.status, x.header = res.StatusCode, res.Header
	x.body, _ = io.ReadAll(res.Body)
	return x
}

// validate checks x against the document: the request (its error is returned, since some
// cases send requests the document forbids) and, always, the response.
func (s *spec) validate(x exchange) (reqErr, resErr error) {
	req, _ := http.NewRequest(x.method, "http://linkhop.test"+x.path, bytes.NewReader(x.reqBody))
	req.Header = x.reqHeader.Clone()
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return err, err
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: filterOptions}
	reqErr = openapi3filter.ValidateRequest(context.Background(), in)
	// The request body was consumed by the validation; the response check does not need it.
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: x.status, Header: x.header, Options: filterOptions}
	out.SetBodyBytes(x.body)
	return reqErr, openapi3filter.ValidateResponse(context.Background(), out)
}

// validateComponent checks an answer that no operation describes (405, unknown routes)
// against a shared response of the document.
func (s *spec) validateComponent(name string, x exchange) error {
	r := s.doc.Components.Responses[name].Value
	for h, ref := range r.Headers {
		if ref.Value.Required && x.header.Get(h) == "" {
			return &openapi3filter.ResponseError{Reason: "missing required header " + h}
		}
	}
	mt := r.Content.Get(x.header.Get("Content-Type"))
	if mt == nil {
		return &openapi3filter.ResponseError{Reason: "content type " + x.header.Get("Content-Type")}
	}
	var v any
	if err := json.Unmarshal(x.body, &v); err != nil {
		return err
	}
	return mt.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	s := loadSpec(t)
	if s.doc.OpenAPI != "3.1.0" || !s.doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi %q, want 3.1.0", s.doc.OpenAPI)
	}
	// Every problem code of the service, each with its own schema and a response that uses it.
	enum := s.doc.Components.Schemas["ProblemCode"].Value.Enum
	var codes []any
	for _, c := range problem.Codes() {
		codes = append(codes, string(c))
		if s.doc.Components.Schemas["Problem_"+string(c)] == nil {
			t.Errorf("no schema for problem code %s", c)
		}
	}
	if !slices.Equal(enum, codes) {
		t.Errorf("ProblemCode enum %v, want %v", enum, codes)
	}
	raw, _ := json.Marshal(s.doc.Components.Responses)
	for _, c := range problem.Codes() {
		if !strings.Contains(string(raw), `"#/components/schemas/Problem_`+string(c)+`"`) {
			t.Errorf("no response uses the problem code %s", c)
		}
	}
	// The server serves exactly the embedded document.
	e := newEnv(t, envOptions{})
	r := e.do("GET", "/openapi.json", "", nil)
	if r.status != http.StatusOK || !bytes.Equal(r.raw, httpapi.OpenAPI()) {
		t.Fatalf("GET /openapi.json: %d, %d bytes", r.status, len(r.raw))
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
}

// TestOpenAPIMatchesHandlers sends real requests for every operation, success and each error,
// and validates request and answer against the document.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	t.Parallel()
	s := loadSpec(t)
	// Links under /stall stay running until the test ends, so their jobs are never done.
	stall := make(chan struct{})
	e := premiumEnv(t, envOptions{worker: true, shortFn: func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/gone"):
			http.NotFound(w, r)
		case strings.HasPrefix(r.URL.Path, "/stall"):
			select {
			case <-stall:
			case <-r.Context().Done():
			}
			http.NotFound(w, r)
		default:
			http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusFound)
		}
	}})
	t.Cleanup(func() { close(stall) }) // before the worker and the shortener stop
	ctx := context.Background()
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0)})
	_, metered := e.key(keys.CreateParams{RateLimit: ptr(100), DailyQuota: ptr[int64](100), Credits: ptr[int64](3)})
	_, poor := e.key(keys.CreateParams{Credits: ptr[int64](1)})
	_, reader := e.key(keys.CreateParams{Scopes: []string{}})
	_, slow := e.key(keys.CreateParams{RateLimit: ptr(1)})
	_, noQuota := e.key(keys.CreateParams{DailyQuota: ptr[int64](0)})
	broken, brokenTok := e.key(keys.CreateParams{})
	// A corrupt key record makes authentication fail with an internal error: the 500 answer.
	if err := e.rdb.HSet(ctx, keys.RecordKey(broken.ID), "rate_limit", "many").Err(); err != nil {
		t.Fatal(err)
	}

	// Jobs in each state: done, failed, and one whose webhook state is filled in.
	done := e.accepted(metered, map[string]any{"url": "http://sho.rt/done"})
	failed := e.accepted(tok, map[string]any{"url": "http://sho.rt/gone"})
	hooked := e.accepted(tok, map[string]any{"url": "http://pre.mi/hook", "webhook_url": "https://hooks.example.com/in"})
	e.waitJob(metered, done)
	e.waitJob(tok, failed)
	e.waitJob(tok, hooked)
	at := time.Now().UTC()
	if _, err := e.jobs.Update(ctx, e.keyID(tok), hooked, func(r *jobs.Record) error {
		code, msg := 503, "receiver answered 503"
		r.Webhook = &webhooks.State{URL: r.WebhookURL, Status: webhooks.StatusPending, Attempts: 2,
			LastAttemptAt: &at, LastStatusCode: &code, LastError: &msg, NextAttemptAt: &at}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A job whose delivery failed for good can be redelivered.
	hookFailed := e.accepted(tok, map[string]any{"url": "http://pre.mi/hook2", "webhook_url": "https://hooks.example.com/in"})
	e.waitJob(tok, hookFailed)
	if _, err := e.jobs.Update(ctx, e.keyID(tok), hookFailed, func(r *jobs.Record) error {
		code, msg := 500, "receiver answered 500"
		r.Webhook = &webhooks.State{URL: r.WebhookURL, Status: webhooks.StatusFailed, Attempts: 4,
			LastAttemptAt: &at, LastStatusCode: &code, LastError: &msg}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	queued := e.accepted(tok, map[string]any{"url": "http://sho.rt/stall"}, "Idempotency-Key", "oa-1")

	huge := `{"url":"https://sho.rt/` + strings.Repeat("a", 70000) + `"}`
	hugeBatch := `{"items":[{"url":"https://sho.rt/` + strings.Repeat("a", 1<<20) + `"}]}`
	_, pair := e.key(keys.CreateParams{RateLimit: ptr(2)})
	// Every entry shape of a batch, in one answer: queued, cached, replays (queued and a
	// conflict), link_removed, unsupported_link and invalid_request.
	mixed := map[string]any{"webhook_url": "https://hooks.example.com/all", "items": []map[string]any{
		{"url": "https://sho.rt/batch-new"},
		{"url": "http://sho.rt/done", "webhook_url": nil},
		{"url": "http://sho.rt/gone"},
		{"url": "https://example.com/x"},
		{"url": "https://sho.rt/y", "webhook_url": "https://10.0.0.1/"},
		{"url": "http://sho.rt/stall", "idempotency_key": "oa-1", "webhook_url": nil},
		{"url": "https://sho.rt/other", "idempotency_key": "oa-1"},
	}}
	ids := "/v1/jobs?ids=" + strings.Join([]string{done, failed, hooked, queued, "nope", "00000000-0000-4000-8000-000000000000"}, ",")
	cases := []struct {
		name       string
		method     string
		path       string
		token      string
		body       any
		hdr        []string
		status     int
		reqInvalid bool // the document itself forbids the request
	}{
		{"healthz", "GET", "/healthz", "", nil, nil, 200, false},
		{"readyz", "GET", "/readyz", "", nil, nil, 200, false},
		{"metrics", "GET", "/metrics", "", nil, nil, 200, false},
		{"openapi", "GET", "/openapi.json", "", nil, nil, 200, false},

		{"resolve queued", "POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/new"}, nil, 202, false},
		{"resolve queued with webhook and key", "POST", "/v1/resolve", metered, map[string]any{"url": "https://pre.mi/p", "webhook_url": "https://hooks.example.com/x", "idempotency_key": "oa-2"}, nil, 202, false},
		{"resolve null optionals", "POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/nulls", "webhook_url": nil, "idempotency_key": nil}, nil, 202, false},
		{"resolve replay queued", "POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/stall"}, []string{"Idempotency-Key", "oa-1"}, 202, false},
		{"resolve cached", "POST", "/v1/resolve", metered, map[string]any{"url": "http://sho.rt/done"}, nil, 200, false},
		{"resolve cached unlimited key", "POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/done"}, nil, 200, false},
		{"resolve malformed", "POST", "/v1/resolve", tok, `{"url":`, nil, 400, true},
		{"resolve unknown field", "POST", "/v1/resolve", tok, `{"url":"https://sho.rt/x","x":1}`, nil, 400, true},
		{"resolve missing url", "POST", "/v1/resolve", tok, `{}`, nil, 400, true},
		{"resolve bad webhook", "POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/x", "webhook_url": "https://10.0.0.1/"}, nil, 400, false},
		{"resolve bad idempotency header", "POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/x"}, []string{"Idempotency-Key", strings.Repeat("k", 129)}, 400, true},
		{"resolve no key", "POST", "/v1/resolve", "", map[string]any{"url": "https://sho.rt/x"}, nil, 401, false},
		{"resolve bad key", "POST", "/v1/resolve", "sk_live_nope", map[string]any{"url": "https://sho.rt/x"}, nil, 401, false},
		{"resolve out of credits", "POST", "/v1/resolve", poor, map[string]any{"url": "https://pre.mi/x"}, nil, 402, false},
		{"resolve forbidden scope", "POST", "/v1/resolve", reader, map[string]any{"url": "https://sho.rt/x"}, nil, 403, false},
		{"resolve conflict", "POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/other"}, []string{"Idempotency-Key", "oa-1"}, 409, false},
		{"resolve removed", "POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/gone"}, nil, 410, false},
		{"resolve too large", "POST", "/v1/resolve", tok, huge, nil, 413, true},
		{"resolve not json", "POST", "/v1/resolve", tok, "url=x", []string{"Content-Type", "text/plain"}, 415, true},
		{"resolve not a provider", "POST", "/v1/resolve", tok, map[string]any{"url": "https://example.com/x"}, nil, 422, false},
		{"resolve quota exceeded", "POST", "/v1/resolve", noQuota, map[string]any{"url": "https://sho.rt/x"}, nil, 429, false},
		{"resolve internal error", "POST", "/v1/resolve", brokenTok, map[string]any{"url": "https://sho.rt/x"}, nil, 500, false},

		{"batch mixed", "POST", "/v1/resolve/batch", tok, mixed, nil, 200, false},
		{"batch cached metered", "POST", "/v1/resolve/batch", metered, map[string]any{"items": []map[string]any{{"url": "http://sho.rt/done"}}}, nil, 200, false},
		{"batch out of credits", "POST", "/v1/resolve/batch", poor, map[string]any{"items": []map[string]any{{"url": "https://pre.mi/b"}}}, nil, 200, false},
		{"batch quota exceeded", "POST", "/v1/resolve/batch", noQuota, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/b"}}}, nil, 200, false},
		{"batch partly rate limited", "POST", "/v1/resolve/batch", pair, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/p1"}, {"url": "https://sho.rt/p2"}, {"url": "https://sho.rt/p3"}}}, nil, 200, false},
		{"batch malformed", "POST", "/v1/resolve/batch", tok, `{"items":`, nil, 400, true},
		{"batch no items", "POST", "/v1/resolve/batch", tok, `{"items":[]}`, nil, 400, true},
		{"batch item without url", "POST", "/v1/resolve/batch", tok, `{"items":[{"webhook_url":"https://hooks.example.com/"}]}`, nil, 400, true},
		{"batch bad default webhook", "POST", "/v1/resolve/batch", tok, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/x"}}, "webhook_url": "https://10.0.0.1/"}, nil, 400, false},
		{"batch no key", "POST", "/v1/resolve/batch", "", map[string]any{"items": []map[string]any{{"url": "https://sho.rt/x"}}}, nil, 401, false},
		{"batch forbidden scope", "POST", "/v1/resolve/batch", reader, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/x"}}}, nil, 403, false},
		{"batch too large", "POST", "/v1/resolve/batch", tok, hugeBatch, nil, 413, true},
		{"batch not json", "POST", "/v1/resolve/batch", tok, "items", []string{"Content-Type", "text/plain"}, 415, true},
		{"batch whole rate limited", "POST", "/v1/resolve/batch", pair, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/p4"}}}, nil, 429, false},
		{"batch internal error", "POST", "/v1/resolve/batch", brokenTok, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/x"}}}, nil, 500, false},

		{"jobs list", "GET", ids, tok, nil, nil, 200, false},
		{"jobs list metered", "GET", "/v1/jobs?ids=" + done, metered, nil, nil, 200, false},
		{"jobs list no ids", "GET", "/v1/jobs", tok, nil, nil, 400, true},
		{"jobs list empty id", "GET", "/v1/jobs?ids=" + done + ",," + failed, tok, nil, nil, 400, false},
		{"jobs list no key", "GET", ids, "", nil, nil, 401, false},
		{"jobs list internal error", "GET", ids, brokenTok, nil, nil, 500, false},

		{"job queued or running", "GET", "/v1/jobs/" + queued, tok, nil, nil, 200, false},
		{"job done metered", "GET", "/v1/jobs/" + done, metered, nil, nil, 200, false},
		{"job failed", "GET", "/v1/jobs/" + failed, tok, nil, nil, 200, false},
		{"job with webhook", "GET", "/v1/jobs/" + hooked, tok, nil, nil, 200, false},
		{"job of another key", "GET", "/v1/jobs/" + done, tok, nil, nil, 404, false},
		{"job malformed id", "GET", "/v1/jobs/nope", tok, nil, nil, 404, false},
		{"job no key", "GET", "/v1/jobs/" + done, "", nil, nil, 401, false},
		{"job internal error", "GET", "/v1/jobs/" + done, brokenTok, nil, nil, 500, false},

		{"redeliver unknown job", "POST", "/v1/jobs/00000000-0000-4000-8000-000000000000/webhook/redeliver", tok, nil, nil, 404, false},
		{"redeliver failed delivery", "POST", "/v1/jobs/" + hookFailed + "/webhook/redeliver", tok, nil, nil, 202, false},
		{"redeliver pending delivery", "POST", "/v1/jobs/" + hooked + "/webhook/redeliver", tok, nil, nil, 409, false},
		{"redeliver no key", "POST", "/v1/jobs/" + hooked + "/webhook/redeliver", "", nil, nil, 401, false},
		{"redeliver internal error", "POST", "/v1/jobs/" + hooked + "/webhook/redeliver", brokenTok, nil, nil, 500, false},

		{"account", "GET", "/v1/account", tok, nil, nil, 200, false},
		{"account metered", "GET", "/v1/account", metered, nil, nil, 200, false},
		{"account no scopes", "GET", "/v1/account", reader, nil, nil, 200, false},
		{"account no key", "GET", "/v1/account", "", nil, nil, 401, false},
		{"account internal error", "GET", "/v1/account", brokenTok, nil, nil, 500, false},
		{"providers", "GET", "/v1/providers", tok, nil, nil, 200, false},
		{"providers no key", "GET", "/v1/providers", "", nil, nil, 401, false},
		{"providers internal error", "GET", "/v1/providers", brokenTok, nil, nil, 500, false},

		// The key "slow" has one request per minute: the first passes, then everything is 429.
		{"providers first of minute", "GET", "/v1/providers", slow, nil, nil, 200, false},
		{"providers rate limited", "GET", "/v1/providers", slow, nil, nil, 429, false},
		{"account rate limited", "GET", "/v1/account", slow, nil, nil, 429, false},
		{"job rate limited", "GET", "/v1/jobs/" + done, slow, nil, nil, 429, false},
		{"resolve rate limited", "POST", "/v1/resolve", slow, map[string]any{"url": "https://sho.rt/x"}, nil, 429, false},
		{"jobs list rate limited", "GET", "/v1/jobs?ids=" + done, slow, nil, nil, 429, false},
		{"redeliver rate limited", "POST", "/v1/jobs/" + hooked + "/webhook/redeliver", slow, nil, nil, 429, false},
	}
	seen := map[string]bool{}
	// check sends one case to on and validates request and answer.
	check := func(on *env, name, method, path, token string, body any, hdr []string, status int, reqInvalid bool) {
		t.Helper()
		x := on.call(method, path, token, body, hdr...)
		if x.status != status {
			t.Errorf("%s: status %d, want %d: %s", name, x.status, status, x.body)
			return
		}
		reqErr, resErr := s.validate(x)
		if resErr != nil {
			t.Errorf("%s: the answer does not match the document: %v\n%s", name, resErr, x.body)
		}
		if reqInvalid != (reqErr != nil) {
			t.Errorf("%s: request validation error %v, want invalid=%v", name, reqErr, reqInvalid)
		}
		if route, _, err := s.router.FindRoute(mustRequest(method, path)); err == nil {
			seen[method+" "+route.Path+" "+strconv.Itoa(x.status)] = true
		}
	}
	for _, tc := range cases {
		// Sequential: some cases depend on earlier ones (the per-minute limit of "slow").
		check(e, tc.name, tc.method, tc.path, tc.token, tc.body, tc.hdr, tc.status, tc.reqInvalid)
	}

	// The admin API, on servers of its own: adm has the admin token; lim has it too, allows
	// one failed authentication per minute and has a corrupt key index and key record (its
	// 429 and 500 answers); e has no admin token, so all of /admin is 404 there.
	adm := newAdminEnv(t, adminToken, 1000)
	lim := newAdminEnv(t, adminToken, 1)
	target, _ := adm.key(keys.CreateParams{Name: "target"})
	revokable, _ := adm.key(keys.CreateParams{Name: "revokable"})
	corrupt, _ := lim.key(keys.CreateParams{})
	if err := lim.rdb.HSet(ctx, keys.RecordKey(corrupt.ID), "rate_limit", "many").Err(); err != nil {
		t.Fatal(err)
	}
	// The index of all keys (keys.Store's "linkhop:keys" set) as a string: list and create fail.
	if err := lim.rdb.Set(ctx, "linkhop:keys", "not a set", 0).Err(); err != nil {
		t.Fatal(err)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+adminToken))
	wrongBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:nope"))
	unknownID := "key_aaaaaaaaaaaaaaaa"
	hugeKey := `{"name":"` + strings.Repeat("a", 70000) + `"}`
	kp := "/admin/keys/" + target.ID
	// Every operation once, for the cases that apply to all of them alike.
	adminOps := []struct {
		method, path string
		body         any
	}{
		{"POST", "/admin/keys", map[string]any{"name": "x"}},
		{"GET", "/admin/keys", nil},
		{"GET", "/admin/keys/" + corrupt.ID, nil},
		{"PATCH", "/admin/keys/" + corrupt.ID, map[string]any{"credits": 1}},
		{"DELETE", "/admin/keys/" + corrupt.ID, nil},
		{"POST", "/admin/keys/" + corrupt.ID + "/revoke", nil},
		{"POST", "/admin/keys/" + corrupt.ID + "/rotate-webhook-secret", nil},
		{"GET", "/admin/queues", nil},
		{"GET", "/admin/queues/", nil},
	}
	adminCases := []struct {
		name         string
		on           *env
		method, path string
		token        string
		body         any
		hdr          []string
		status       int
		reqInvalid   bool
	}{
		{"admin create", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "acme", "scopes": []string{"resolve"}, "rate_limit_per_minute": 10, "daily_quota": 100, "credits": 5}, nil, 201, false},
		{"admin create defaults", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "plain"}, nil, 201, false},
		{"admin create nulls", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "nulls", "scopes": nil, "rate_limit_per_minute": nil, "daily_quota": nil, "credits": nil}, nil, 201, false},
		{"admin create without scopes", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "reader", "scopes": []string{}, "rate_limit_per_minute": 0}, nil, 201, false},
		{"admin create basic auth", adm, "POST", "/admin/keys", "", map[string]any{"name": "browser"}, []string{"Authorization", basic}, 201, false},
		{"admin create without name", adm, "POST", "/admin/keys", adminToken, map[string]any{}, nil, 400, true},
		{"admin create blank name", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": " "}, nil, 400, false},
		{"admin create unknown scope", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "x", "scopes": []string{"root"}}, nil, 400, true},
		{"admin create negative credits", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "x", "credits": -1}, nil, 400, true},
		{"admin create unknown field", adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "x", "admin": true}, nil, 400, true},
		{"admin create malformed", adm, "POST", "/admin/keys", adminToken, `{"name":`, nil, 400, true},
		{"admin create too large", adm, "POST", "/admin/keys", adminToken, hugeKey, nil, 413, true},
		{"admin create as form", adm, "POST", "/admin/keys", adminToken, "name=x", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, true},
		{"admin create no token", adm, "POST", "/admin/keys", "", map[string]any{"name": "x"}, nil, 401, false},
		{"admin create wrong token", adm, "POST", "/admin/keys", "nope", map[string]any{"name": "x"}, nil, 401, false},
		{"admin create wrong password", adm, "POST", "/admin/keys", "", map[string]any{"name": "x"}, []string{"Authorization", wrongBasic}, 401, false},

		{"admin list", adm, "GET", "/admin/keys", adminToken, nil, nil, 200, false},
		{"admin list basic auth", adm, "GET", "/admin/keys", "", nil, []string{"Authorization", basic}, 200, false},
		{"admin list head", adm, "HEAD", "/admin/keys", adminToken, nil, nil, 200, false},
		{"admin list an API key", adm, "GET", "/admin/keys", tok, nil, nil, 401, false},

		{"admin show", adm, "GET", kp, adminToken, nil, nil, 200, false},
		{"admin show head", adm, "HEAD", kp, adminToken, nil, nil, 200, false},
		{"admin show unknown", adm, "GET", "/admin/keys/" + unknownID, adminToken, nil, nil, 404, false},
		{"admin show malformed id", adm, "GET", "/admin/keys/NOT-A-KEY", adminToken, nil, nil, 404, false},
		{"admin show no token", adm, "GET", kp, "", nil, nil, 401, false},

		{"admin update", adm, "PATCH", kp, adminToken, map[string]any{"rate_limit_per_minute": 0, "daily_quota": 10, "credits": 5}, nil, 200, false},
		{"admin update to null", adm, "PATCH", kp, adminToken, map[string]any{"daily_quota": nil, "credits": nil}, nil, 200, false},
		{"admin update nothing", adm, "PATCH", kp, adminToken, map[string]any{}, nil, 200, false},
		{"admin update rate null", adm, "PATCH", kp, adminToken, map[string]any{"rate_limit_per_minute": nil}, nil, 400, true},
		{"admin update negative quota", adm, "PATCH", kp, adminToken, map[string]any{"daily_quota": -1}, nil, 400, true},
		{"admin update credits as string", adm, "PATCH", kp, adminToken, map[string]any{"credits": "5"}, nil, 400, true},
		{"admin update too large", adm, "PATCH", kp, adminToken, hugeKey, nil, 413, true},
		{"admin update not json", adm, "PATCH", kp, adminToken, "credits=5", []string{"Content-Type", "text/plain"}, 415, true},
		{"admin update unknown", adm, "PATCH", "/admin/keys/" + unknownID, adminToken, map[string]any{"credits": 1}, nil, 404, false},
		{"admin update no token", adm, "PATCH", kp, "", map[string]any{"credits": 1}, nil, 401, false},

		{"admin rotate", adm, "POST", kp + "/rotate-webhook-secret", adminToken, map[string]any{"grace": "1h30m"}, nil, 200, false},
		{"admin rotate ending now", adm, "POST", kp + "/rotate-webhook-secret", adminToken, map[string]any{"grace": "0s"}, nil, 200, false},
		{"admin rotate without body", adm, "POST", kp + "/rotate-webhook-secret", adminToken, nil, nil, 200, false},
		{"admin rotate negative grace", adm, "POST", kp + "/rotate-webhook-secret", adminToken, map[string]any{"grace": "-1h"}, nil, 400, true},
		{"admin rotate bad grace", adm, "POST", kp + "/rotate-webhook-secret", adminToken, map[string]any{"grace": "tomorrow"}, nil, 400, true},
		{"admin rotate too large", adm, "POST", kp + "/rotate-webhook-secret", adminToken, hugeKey, nil, 413, true},
		{"admin rotate as form", adm, "POST", kp + "/rotate-webhook-secret", adminToken, "grace=1h", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, true},
		{"admin rotate unknown", adm, "POST", "/admin/keys/" + unknownID + "/rotate-webhook-secret", adminToken, nil, nil, 404, false},
		{"admin rotate no token", adm, "POST", kp + "/rotate-webhook-secret", "", nil, nil, 401, false},

		{"admin revoke", adm, "POST", "/admin/keys/" + revokable.ID + "/revoke", adminToken, nil, nil, 200, false},
		{"admin revoke again", adm, "POST", "/admin/keys/" + revokable.ID + "/revoke", adminToken, nil, nil, 200, false},
		{"admin delete revoked", adm, "DELETE", "/admin/keys/" + revokable.ID, adminToken, nil, nil, 200, false},
		{"admin list with a revoked key", adm, "GET", "/admin/keys", adminToken, nil, nil, 200, false},
		{"admin delete", adm, "DELETE", kp, adminToken, nil, nil, 200, false},
		{"admin revoke unknown", adm, "POST", "/admin/keys/" + unknownID + "/revoke", adminToken, nil, nil, 404, false},
		{"admin delete unknown", adm, "DELETE", "/admin/keys/" + unknownID, adminToken, nil, nil, 404, false},
		{"admin revoke no token", adm, "POST", kp + "/revoke", "", nil, nil, 401, false},
		{"admin delete no token", adm, "DELETE", kp, "", nil, nil, 401, false},

		{"admin queue UI", adm, "GET", "/admin/queues/", adminToken, nil, nil, 200, false},
		{"admin queue UI basic auth", adm, "GET", "/admin/queues/", "", nil, []string{"Authorization", basic}, 200, false},
		{"admin queue UI redirect", adm, "GET", "/admin/queues", adminToken, nil, nil, 301, false},
		{"admin queue UI no token", adm, "GET", "/admin/queues/", "", nil, nil, 401, false},
		{"admin queue UI redirect no token", adm, "GET", "/admin/queues", "", nil, nil, 401, false},

		// The first failed authentication on lim is the last one its limit allows.
		{"admin lim first failure", lim, "GET", "/admin/keys", "", nil, nil, 401, false},
		// A corrupt record or index is a bug's answer; the right token passes the gate anyway.
		{"admin create internal error", lim, "POST", "/admin/keys", adminToken, map[string]any{"name": "x"}, nil, 500, false},
		{"admin list internal error", lim, "GET", "/admin/keys", adminToken, nil, nil, 500, false},
		{"admin show internal error", lim, "GET", "/admin/keys/" + corrupt.ID, adminToken, nil, nil, 500, false},
		{"admin update internal error", lim, "PATCH", "/admin/keys/" + corrupt.ID, adminToken, map[string]any{"credits": 1}, nil, 500, false},
		{"admin delete internal error", lim, "DELETE", "/admin/keys/" + corrupt.ID, adminToken, nil, nil, 500, false},
		{"admin revoke internal error", lim, "POST", "/admin/keys/" + corrupt.ID + "/revoke", adminToken, nil, nil, 500, false},
		{"admin rotate internal error", lim, "POST", "/admin/keys/" + corrupt.ID + "/rotate-webhook-secret", adminToken, nil, nil, 500, false},
	}
	for _, tc := range adminCases {
		check(tc.on, tc.name, tc.method, tc.path, tc.token, tc.body, tc.hdr, tc.status, tc.reqInvalid)
	}
	for _, op := range adminOps {
		// Past lim's failed-authentication limit, every operation is 429 before routing.
		check(lim, "admin rate limited: "+op.method+" "+op.path, op.method, op.path, "", op.body, nil, 429, false)
		// Without LINKHOP_ADMIN_TOKEN, every operation is 404, even with a token.
		check(e, "admin off: "+op.method+" "+op.path, op.method, op.path, adminToken, op.body, nil, 404, false)
	}
	// Every documented answer of every operation was produced at least once, except the 503s
	// (TestOpenAPIUnavailable stops Redis for them).
	for path, item := range s.doc.Paths.Map() {
		for method, op := range item.Operations() {
			if method == http.MethodHead {
				continue
			}
			for status := range op.Responses.Map() {
				if k := method + " " + path + " " + status; !seen[k] && status != "503" {
					t.Errorf("no case produced %s", k)
				}
			}
		}
	}

	// Answers no operation describes: unknown routes and wrong methods, under /admin too.
	for _, c := range []struct {
		name, response string
		x              exchange
		status         int
	}{
		{"unknown route", "NotFound", e.call("GET", "/v2/nothing", tok, nil), 404},
		{"wrong method", "MethodNotAllowed", e.call("GET", "/v1/resolve", tok, nil), 405},
		{"admin unknown route", "NotFound", adm.call("GET", "/admin/nothing", adminToken, nil), 404},
		{"admin wrong method", "MethodNotAllowed", adm.call("PUT", "/admin/keys", adminToken, nil), 405},
		{"admin wrong method on a key", "MethodNotAllowed", adm.call("POST", kp, adminToken, nil), 405},
		{"admin unknown route, no token", "AdminUnauthorized", adm.call("GET", "/admin/nothing", "", nil), 401},
		{"admin wrong method, no token", "AdminUnauthorized", adm.call("PUT", "/admin/keys", "", nil), 401},
		{"admin unknown route, admin off", "AdminOff", e.call("GET", "/admin/nothing", adminToken, nil), 404},
		{"admin unknown route, rate limited", "AdminAuthLimited", lim.call("GET", "/admin/nothing", "", nil), 429},
	} {
		if c.x.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, c.x.status, c.status, c.x.body)
			continue
		}
		if err := s.validateComponent(c.response, c.x); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Both challenges, which validation sees only the first of.
	x := adm.call("GET", "/admin/keys", "", nil)
	if got := x.header.Values("WWW-Authenticate"); len(got) != 2 ||
		got[0] != `Bearer realm="linkhop admin"` || got[1] != `Basic realm="linkhop admin", charset="UTF-8"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
}

// TestOpenAPIUnavailable validates the 503 answers with Redis stopped.
func TestOpenAPIUnavailable(t *testing.T) {
	t.Parallel()
	s := loadSpec(t)
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	e.redis.Stop()
	adm := newAdminEnv(t, adminToken, 30)
	id, _ := adm.key(keys.CreateParams{})
	adm.redis.Stop()
	kp := "/admin/keys/" + id.ID
	var wg sync.WaitGroup
	// In parallel: each answer waits for the client's dial attempts to give up.
	for _, c := range []struct {
		on           *env
		method, path string
		token        string
		body         any
	}{
		{e, "GET", "/readyz", "", nil},
		{e, "POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/x"}},
		{e, "GET", "/v1/jobs/00000000-0000-4000-8000-000000000000", tok, nil},
		{e, "POST", "/v1/resolve/batch", tok, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/x"}}}},
		{e, "GET", "/v1/jobs?ids=00000000-0000-4000-8000-000000000000", tok, nil},
		{e, "GET", "/v1/account", tok, nil},
		{e, "GET", "/v1/providers", tok, nil},
		// The admin token passes the gate without Redis; the key store then needs it.
		{adm, "POST", "/admin/keys", adminToken, map[string]any{"name": "x"}},
		{adm, "GET", "/admin/keys", adminToken, nil},
		{adm, "GET", kp, adminToken, nil},
		{adm, "PATCH", kp, adminToken, map[string]any{"credits": 1}},
		{adm, "DELETE", kp, adminToken, nil},
		{adm, "POST", kp + "/revoke", adminToken, nil},
		{adm, "POST", kp + "/rotate-webhook-secret", adminToken, nil},
		// A wrong token needs Redis for the failed-authentication limit.
		{adm, "GET", "/admin/keys", "nope", nil},
		{adm, "GET", "/admin/queues", "", nil},
		{adm, "GET", "/admin/queues/", "", nil},
	} {
		wg.Go(func() {
			x := c.on.call(c.method, c.path, c.token, c.body)
			if x.status != http.StatusServiceUnavailable {
				t.Errorf("%s %s: %d %s", c.method, c.path, x.status, x.body)
				return
			}
			if _, err := s.validate(x); err != nil {
				t.Errorf("%s %s: %v\n%s", c.method, c.path, err, x.body)
			}
		})
	}
	wg.Wait()
}

// TestOpenAPIValidatorChecksTypes proves the validation above has teeth: real answers, altered
// in one member each, must fail it.
func TestOpenAPIValidatorChecksTypes(t *testing.T) {
	t.Parallel()
	s := loadSpec(t)
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{Credits: ptr[int64](5)})
	id := e.accepted(tok, map[string]any{"url": "https://sho.rt/neg"})
	job := e.call("GET", "/v1/jobs/"+id, tok, nil)
	acc := e.call("GET", "/v1/account", tok, nil)
	queued := e.call("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/neg2"})
	prob := e.call("POST", "/v1/resolve", tok, `{"url":1}`)
	batch := e.call("POST", "/v1/resolve/batch", tok, map[string]any{"items": []map[string]any{{"url": "https://sho.rt/neg3"}, {"url": "https://example.com/"}}})
	list := e.call("GET", "/v1/jobs?ids="+id+",nope", tok, nil)
	adm := newAdminEnv(t, adminToken, 30)
	created := adm.call("POST", "/admin/keys", adminToken, map[string]any{"name": "teeth", "credits": 3})
	kp := "/admin/keys/" + keyIDOf(t, created)
	shown := adm.call("GET", kp, adminToken, nil)
	listed := adm.call("GET", "/admin/keys", adminToken, nil)
	rotated := adm.call("POST", kp+"/rotate-webhook-secret", adminToken, nil)
	revoked := adm.call("POST", kp+"/revoke", adminToken, nil)
	denied := adm.call("GET", "/admin/keys", "", nil)
	for _, x := range []exchange{job, acc, queued, prob, batch, list, created, shown, listed, rotated, revoked, denied} {
		if _, err := s.validate(x); err != nil {
			t.Fatalf("the unaltered answer %s %s fails: %v", x.method, x.path, err)
		}
	}
	cases := []struct {
		name   string
		base   exchange
		mutate func(m map[string]any)
	}{
		{"credits_charged as string", job, func(m map[string]any) { m["credits_charged"] = "0" }},
		{"credits_charged fractional", job, func(m map[string]any) { m["credits_charged"] = 0.5 }},
		{"balance as string", job, func(m map[string]any) { m["balance"] = "5" }},
		{"balance fractional", acc, func(m map[string]any) { m["balance"] = 4.5 }},
		{"status outside the enum", job, func(m map[string]any) { m["status"] = "pending" }},
		{"tier outside the enum", job, func(m map[string]any) { m["tier"] = "gold" }},
		{"created_at without milliseconds", job, func(m map[string]any) { m["created_at"] = "2026-01-02T03:04:05Z" }},
		{"hops null", job, func(m map[string]any) { m["hops"] = nil }},
		{"member missing", job, func(m map[string]any) { delete(m, "webhook") }},
		{"undocumented member", job, func(m map[string]any) { m["extra"] = true }},
		{"telegram_id as string", acc, func(m map[string]any) { m["telegram_id"] = "0" }},
		{"scopes null", acc, func(m map[string]any) { m["scopes"] = nil }},
		{"queued status done", queued, func(m map[string]any) { m["status"] = "done" }},
		{"queue_position as string", queued, func(m map[string]any) { m["queue_position"] = "0" }},
		{"problem code unknown", prob, func(m map[string]any) { m["code"] = "teapot" }},
		{"problem without errors", prob, func(m map[string]any) { delete(m, "errors") }},
		{"problem with balance", prob, func(m map[string]any) { m["balance"] = 1 }},
		{"problem status mismatch", prob, func(m map[string]any) { m["status"] = 418 }},
		{"batch entry queued as done", batch, func(m map[string]any) { m["items"].([]any)[0].(map[string]any)["status"] = "done" }},
		{"batch entry with instance", batch, func(m map[string]any) { m["items"].([]any)[1].(map[string]any)["instance"] = "x" }},
		{"batch entry unknown code", batch, func(m map[string]any) { m["items"].([]any)[1].(map[string]any)["code"] = "teapot" }},
		{"batch entry a whole-request code", batch, func(m map[string]any) {
			e := m["items"].([]any)[1].(map[string]any)
			e["code"], e["status"], e["title"], e["type"] = "invalid_key", 401, "Invalid API key", problem.InvalidKey.Type()
		}},
		{"batch without items", batch, func(m map[string]any) { m["items"] = []any{} }},
		{"jobs list entry not a job", list, func(m map[string]any) { m["jobs"].([]any)[1] = map[string]any{"job_id": "x"} }},
		{"jobs list entry missing status", list, func(m map[string]any) { delete(m["jobs"].([]any)[0].(map[string]any), "status") }},
		{"created key without the key", created, func(m map[string]any) { delete(m, "key") }},
		{"created key with created_at", created, func(m map[string]any) { m["created_at"] = m["credits"] }},
		{"created key rate as string", created, func(m map[string]any) { m["rate_limit_per_minute"] = "60" }},
		{"created key unknown scope", created, func(m map[string]any) { m["scopes"] = []any{"admin"} }},
		{"shown key with the key", shown, func(m map[string]any) { m["key"] = "sk_live_x" }},
		{"shown key without secret", shown, func(m map[string]any) { delete(m, "webhook_secret") }},
		{"shown key malformed secret", shown, func(m map[string]any) { m["webhook_secret"] = "secret" }},
		{"shown key credits fractional", shown, func(m map[string]any) { m["credits"] = 2.5 }},
		{"listed key with its secret", listed, func(m map[string]any) {
			m["keys"].([]any)[0].(map[string]any)["webhook_secret"] = "whsec_" + strings.Repeat("A", 43) + "="
		}},
		{"listed key created_at in seconds", listed, func(m map[string]any) {
			m["keys"].([]any)[0].(map[string]any)["created_at"] = "2026-01-02T03:04:05Z"
		}},
		{"rotated key without valid_until", rotated, func(m map[string]any) { delete(m, "previous_secret_valid_until") }},
		{"revoked key without revoked_at", revoked, func(m map[string]any) { delete(m, "revoked_at") }},
		{"admin 401 with another code", denied, func(m map[string]any) { m["code"] = "not_found" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(tc.base.body, &m); err != nil {
				t.Fatal(err)
			}
			tc.mutate(m)
			x := tc.base
			x.body, _ = json.Marshal(m)
			if _, err := s.validate(x); err == nil {
				t.Errorf("the altered answer passes validation: %s", x.body)
			}
		})
	}
	// A missing required header fails too.
	x := queued
	x.header = queued.header.Clone()
	x.header.Del("Location")
	if _, err := s.validate(x); err == nil {
		t.Error("a 202 without Location passes validation")
	}
	x = denied
	x.header = denied.header.Clone()
	x.header.Del("WWW-Authenticate")
	if _, err := s.validate(x); err == nil {
		t.Error("an admin 401 without WWW-Authenticate passes validation")
	}
}

// keyIDOf is the id of the key an admin answer describes.
func keyIDOf(t *testing.T, x exchange) string {
	t.Helper()
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(x.body, &v); err != nil || v.ID == "" {
		t.Fatalf("no key id in %d %s", x.status, x.body)
	}
	return v.ID
}

func mustRequest(method, path string) *http.Request {
	r, _ := http.NewRequest(method, "http://linkhop.test"+path, nil)
	return r
}

// keyID returns the key id of a token.
func (e *env) keyID(token string) string {
	e.t.Helper()
	id, ok := keys.ParseToken(token)
	if !ok {
		e.t.Fatalf("bad token %q", token)
	}
	return id
}

// TestOpenAPIWebhookEvent: the webhooks section describes the bodies deliveries really send.
func TestOpenAPIWebhookEvent(t *testing.T) {
	t.Parallel()
	s := loadSpec(t)
	ref := s.doc.Components.Schemas["WebhookEvent"]
	if ref == nil || s.doc.Webhooks["resolveEvent"] == nil || s.doc.Webhooks["resolveEvent"].Post == nil {
		t.Fatal("openapi.json lacks the WebhookEvent schema or the resolveEvent webhook")
	}
	target, provider, tier, code, balance := "https://example.com/x", "bitly", "standard", "link_removed", int64(7)
	for name, ev := range map[string]webhooks.Event{
		"done":     {Event: webhooks.EventResolveDone, CreatedAt: time.Now(), JobID: "0f8fad5b-d9cb-469f-a165-70867728950e", Status: "done", TargetURL: &target, Provider: &provider, Tier: &tier, CreditsCharged: 1, Balance: &balance},
		"failed":   {Event: webhooks.EventResolveFailed, CreatedAt: time.Now(), JobID: "0f8fad5b-d9cb-469f-a165-70867728950e", Status: "failed", Provider: &provider, Tier: &tier, Error: &code},
		"any-host": {Event: webhooks.EventResolveDone, CreatedAt: time.Now(), JobID: "0f8fad5b-d9cb-469f-a165-70867728950e", Status: "done", TargetURL: &target},
	} {
		body, err := ev.Body()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		if err := ref.Value.VisitJSON(v); err != nil {
			t.Errorf("%s event %s does not match WebhookEvent: %v", name, body, err)
		}
	}
}
