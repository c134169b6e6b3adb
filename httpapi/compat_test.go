package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// This file holds linkhop's JSON to what the public Link Skipper SDKs parse (the PHP SDK
// 0.2.1 is the strictest): the field names and JSON types they read, the enums they map with
// from() (which throws on an unknown value), integers where they cast to int, and the error
// codes they turn into exception classes. lsClient below mimics that SDK's requests and its
// parsing; the shape checks are stricter than the SDK (a field must also be present).

// The enums of the SDK.
var (
	sdkJobStatuses = []string{"queued", "running", "done", "failed", "invalid"}
	sdkTiers       = []string{"standard", "premium"}
	// sdkErrorCodes are the codes the SDK maps to their own exception class; it maps any
	// other code by the HTTP status.
	sdkErrorCodes = []string{"invalid_request", "invalid_key", "forbidden_scope", "unsupported_link", "link_removed",
		"rate_limited", "quota_exceeded", "out_of_credits", "provider_down", "resolve_failed", "not_found"}
)

// jsonType names the JSON type of a value decoded with UseNumber: an integer is a number
// literal without fraction or exponent, which is what a strict client's int cast expects.
func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		if strings.ContainsAny(x.String(), ".eE") {
			return "number"
		}
		return "integer"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// member is one field a client reads: its allowed JSON types and, for strings, its enum.
type member struct {
	name  string
	types string // "string|null"
	enum  []string
}

func mem(name, types string, enum ...string) member { return member{name, types, enum} }

var (
	tierMember       = mem("tier", "string|null", sdkTiers...)
	balanceMember    = mem("balance", "integer|null")
	resolveDoneShape = []member{
		mem("job_id", "string|null"), mem("status", "string", "done"), mem("url", "string"), mem("target_url", "string"),
		mem("provider", "string"), tierMember, mem("credits_charged", "integer"), mem("cached", "boolean"), balanceMember,
	}
	resolveQueuedShape = []member{
		mem("job_id", "string"), mem("status", "string", "queued"), mem("queue_position", "integer"), mem("poll_url", "string"),
	}
	jobShape = []member{
		mem("job_id", "string"), mem("status", "string", sdkJobStatuses...), mem("url", "string"), mem("target_url", "string|null"),
		mem("provider", "string|null"), tierMember,
		mem("error", "string|null", "resolve_failed", "provider_down", "link_removed", "unsupported_link"),
		mem("error_detail", "string|null"), mem("credits_charged", "integer"), balanceMember,
		mem("created_at", "string"), mem("updated_at", "string"), mem("completed_at", "string|null"),
		mem("hops", "array"), mem("webhook", "object|null"),
	}
	hopShape     = []member{mem("url", "string"), mem("status", "integer|null"), mem("kind", "string", "start", "http", "refresh", "meta", "js", "param", "provider")}
	webhookShape = []member{
		mem("url", "string"), mem("status", "string", "pending", "delivered", "failed"), mem("attempts", "integer"),
		mem("last_attempt_at", "string|null"), mem("last_status_code", "integer|null"), mem("last_error", "string|null"),
		mem("next_attempt_at", "string|null"),
	}
	accountShape = []member{
		mem("key_id", "string"), mem("name", "string"), mem("scopes", "array"), mem("rate_limit_per_minute", "integer"),
		mem("daily_quota", "integer|null"), mem("daily_used", "integer"), balanceMember, mem("telegram_id", "integer"),
		mem("subscription_until", "string|null"), mem("providers", "array"),
	}
	// family is linkhop's addition (docs/resolving.md#provider-families); the SDK reads
	// provider entries as arrays and ignores members it does not know.
	accountProviderShape = []member{mem("provider", "string"), mem("label", "string"), mem("tier", "string", sdkTiers...), mem("family", "string", families...)}
	providerShape        = []member{mem("provider", "string"), mem("label", "string"), mem("hosts", "array"), mem("tier", "string", sdkTiers...), mem("family", "string", families...), mem("latency", "string")}
	families             = resolve.Families()
	problemShape         = []member{mem("type", "string"), mem("title", "string"), mem("status", "integer"), mem("code", "string"), mem("detail", "string"), mem("instance", "string")}
)

// checkShape fails unless obj has every member with an allowed type and enum value, and
// nothing else.
func checkShape(t *testing.T, where string, obj map[string]any, shape []member) {
	t.Helper()
	for _, msg := range shapeErrors(obj, shape) {
		t.Errorf("%s: %s", where, msg)
	}
}

func shapeErrors(obj map[string]any, shape []member) []string {
	var out []string
	names := map[string]bool{}
	for _, f := range shape {
		names[f.name] = true
		v, ok := obj[f.name]
		if !ok {
			out = append(out, fmt.Sprintf("no %q", f.name))
			continue
		}
		got := jsonType(v)
		if !slices.Contains(strings.Split(f.types, "|"), got) {
			out = append(out, fmt.Sprintf("%q is %s (%v), a client expects %s", f.name, got, v, f.types))
			continue
		}
		if s, isString := v.(string); isString && len(f.enum) > 0 && !slices.Contains(f.enum, s) {
			out = append(out, fmt.Sprintf("%q = %q, a client knows only %v", f.name, s, f.enum))
		}
	}
	for k := range obj {
		if !names[k] {
			out = append(out, fmt.Sprintf("unexpected member %q", k))
		}
	}
	slices.Sort(out)
	return out
}

// TestCompatShapeCheck proves the checks above catch what would break a strict client.
func TestCompatShapeCheck(t *testing.T) {
	t.Parallel()
	decode := func(s string) map[string]any {
		var v map[string]any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	good := `{"job_id":null,"status":"done","url":"u","target_url":"t","provider":"p","tier":"standard","credits_charged":0,"cached":true,"balance":3}`
	if errs := shapeErrors(decode(good), resolveDoneShape); len(errs) != 0 {
		t.Fatalf("a good answer fails: %v", errs)
	}
	cases := []struct{ name, body string }{
		{"float credits", strings.Replace(good, `"credits_charged":0`, `"credits_charged":0.0`, 1)},
		{"exponent balance", strings.Replace(good, `"balance":3`, `"balance":3e0`, 1)},
		{"string balance", strings.Replace(good, `"balance":3`, `"balance":"3"`, 1)},
		{"unknown tier", strings.Replace(good, `"standard"`, `"gold"`, 1)},
		{"resolve status running", strings.Replace(good, `"done"`, `"running"`, 1)},
		{"missing member", strings.Replace(good, `"cached":true,`, ``, 1)},
		{"extra member", strings.Replace(good, `{`, `{"extra":1,`, 1)},
		{"cached as string", strings.Replace(good, `"cached":true`, `"cached":"true"`, 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if errs := shapeErrors(decode(tc.body), resolveDoneShape); len(errs) == 0 {
				t.Errorf("accepted %s", tc.body)
			}
		})
	}
}

// lsClient does what the Link Skipper PHP SDK does on the wire.
type lsClient struct {
	t       *testing.T
	baseURL string
	apiKey  string
}

// lsError is the SDK's ApiException: the problem it parsed and the class it maps the code to.
type lsError struct {
	status     int
	code       string
	class      string
	balance    *int64
	retryAfter *int64
	problem    map[string]any
}

func (e *lsError) Error() string { return e.class + ": " + e.code }

// sdkClass is the SDK's ApiExceptionFactory: a known code picks its class, anything else
// falls back on the HTTP status.
func sdkClass(code string, status int) string {
	if !slices.Contains(sdkErrorCodes, code) {
		switch status {
		case 400:
			code = "invalid_request"
		case 401:
			code = "invalid_key"
		case 402:
			code = "out_of_credits"
		case 403:
			code = "forbidden_scope"
		case 404:
			code = "not_found"
		case 410:
			code = "link_removed"
		case 422:
			code = "unsupported_link"
		case 429:
			code = "rate_limited"
		case 503:
			code = "provider_down"
		default:
			code = "resolve_failed"
		}
	}
	var b strings.Builder
	for _, part := range strings.Split(code, "_") {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String() + "Exception"
}

// request sends one call as the SDK does and decodes the answer with UseNumber; a non-2xx
// answer becomes an *lsError (the SDK's retries are left out: tests want the first answer).
func (c *lsClient) request(method, path string, body map[string]any, hdr map[string]string) (map[string]any, error) {
	c.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, c.baseURL+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", "linkskipper-php/0.2.1")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	dec := json.NewDecoder(res.Body)
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		c.t.Fatalf("%s %s: %d with a body that is not a JSON object: %v", method, path, res.StatusCode, err)
	}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return out, nil
	}
	checkShapeProblem(c.t, method+" "+path, out, res)
	e := &lsError{status: res.StatusCode, problem: out}
	e.code, _ = out["code"].(string)
	e.class = sdkClass(e.code, res.StatusCode)
	if n, ok := out["balance"].(json.Number); ok {
		v, _ := n.Int64()
		e.balance = &v
	}
	if ra := res.Header.Get("Retry-After"); ra != "" {
		v, err := strconv.ParseInt(ra, 10, 64)
		if err != nil {
			c.t.Errorf("Retry-After %q is not whole seconds", ra)
		}
		e.retryAfter = &v
	}
	return nil, e
}

// checkShapeProblem checks a problem answer: the members the SDK reads, and that it is what
// the HTTP status says.
func checkShapeProblem(t *testing.T, where string, p map[string]any, res *http.Response) {
	t.Helper()
	base := map[string]any{}
	for k, v := range p {
		switch k {
		case "errors", "retry_after", "balance":
			if k == "errors" {
				if jsonType(v) != "array" {
					t.Errorf("%s: errors is %s", where, jsonType(v))
				}
			} else if jsonType(v) != "integer" {
				t.Errorf("%s: %s is %s (%v), want integer", where, k, jsonType(v), v)
			}
		default:
			base[k] = v
		}
	}
	checkShape(t, where+" problem", base, problemShape)
	if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s: problem content type %q", where, ct)
	}
	if n, _ := p["status"].(json.Number); n.String() != strconv.Itoa(res.StatusCode) {
		t.Errorf("%s: problem status %v on an HTTP %d", where, p["status"], res.StatusCode)
	}
}

// resolve is LinkSkipper::resolve.
func (c *lsClient) resolve(u, idempotencyKey string) (map[string]any, error) {
	var hdr map[string]string
	if idempotencyKey != "" {
		hdr = map[string]string{"Idempotency-Key": idempotencyKey}
	}
	out, err := c.request("POST", "/v1/resolve", map[string]any{"url": u}, hdr)
	if err != nil {
		return nil, err
	}
	switch out["status"] {
	case "done":
		checkShape(c.t, "resolve 200", out, resolveDoneShape)
	case "queued":
		checkShape(c.t, "resolve 202", out, resolveQueuedShape)
	default:
		c.t.Errorf("resolve status %v: the SDK's ResolveStatus::from throws", out["status"])
	}
	return out, nil
}

// getJob is LinkSkipper::getJob (the id is URL-encoded, as rawurlencode does).
func (c *lsClient) getJob(id string) (map[string]any, error) {
	out, err := c.request("GET", "/v1/jobs/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return nil, err
	}
	checkShape(c.t, "job", out, jobShape)
	for _, h := range out["hops"].([]any) {
		checkShape(c.t, "job hop", h.(map[string]any), hopShape)
	}
	if w, ok := out["webhook"].(map[string]any); ok {
		checkShape(c.t, "job webhook", w, webhookShape)
	}
	return out, nil
}

// resolveAndWait is LinkSkipper::resolveAndWait: the result, or the terminal job's error.
func (c *lsClient) resolveAndWait(u string) (result map[string]any, jobErr string) {
	c.t.Helper()
	first, err := c.resolve(u, "")
	if err != nil {
		c.t.Fatalf("resolveAndWait(%s): %v", u, err)
	}
	if first["status"] == "done" {
		return first, ""
	}
	id, ok := first["job_id"].(string)
	if !ok {
		c.t.Fatal("the API queued a job without returning a job_id")
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		job, err := c.getJob(id)
		if err != nil {
			c.t.Fatalf("getJob: %v", err)
		}
		id = job["job_id"].(string)
		switch job["status"] {
		case "done":
			return job, ""
		case "failed", "invalid":
			reason, _ := job["error"].(string)
			return job, reason
		}
	}
	c.t.Fatalf("job %s did not finish", id)
	return nil, ""
}

func TestCompatLinkSkipperSDK(t *testing.T) {
	t.Parallel()
	e := premiumEnv(t, envOptions{worker: true, shortFn: func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/gone") {
			http.Error(w, "gone", http.StatusGone)
			return
		}
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusFound)
	}})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0), Credits: ptr[int64](10)})
	c := &lsClient{t: t, baseURL: e.api.URL, apiKey: tok}

	t.Run("resolveAndWait premium then cached", func(t *testing.T) {
		c := &lsClient{t: t, baseURL: c.baseURL, apiKey: c.apiKey}
		job, reason := c.resolveAndWait("http://pre.mi/abc")
		if reason != "" || job["target_url"] != "https://example.com/dest/abc" || job["tier"] != "premium" ||
			job["credits_charged"] != json.Number("2") || job["balance"] != json.Number("8") {
			t.Fatalf("ResolvedLink from the job: %v (%s)", job, reason)
		}
		again, reason := c.resolveAndWait("http://pre.mi/abc")
		if reason != "" || again["cached"] != true || again["job_id"] != nil || again["credits_charged"] != json.Number("0") {
			t.Fatalf("ResolvedLink from a cached answer: %v", again)
		}
	})
	t.Run("resolveAndWait failure", func(t *testing.T) {
		c := &lsClient{t: t, baseURL: c.baseURL, apiKey: c.apiKey}
		job, reason := c.resolveAndWait("http://sho.rt/gone")
		if job["status"] != "failed" || reason != "link_removed" {
			t.Fatalf("JobFailedException reason %q, job %v", reason, job)
		}
	})
	t.Run("resolve with idempotency key", func(t *testing.T) {
		c := &lsClient{t: t, baseURL: c.baseURL, apiKey: c.apiKey}
		a, err := c.resolve("http://sho.rt/idem", "order-42")
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.resolve("http://sho.rt/idem", "order-42")
		if err != nil || b["job_id"] != a["job_id"] {
			t.Fatalf("replay %v, %v; first %v", b, err, a)
		}
	})
	t.Run("account", func(t *testing.T) {
		c := &lsClient{t: t, baseURL: c.baseURL, apiKey: c.apiKey}
		acc, err := c.request("GET", "/v1/account", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkShape(t, "account", acc, accountShape)
		for _, p := range acc["providers"].([]any) {
			checkShape(t, "account provider", p.(map[string]any), accountProviderShape)
		}
		if acc["telegram_id"] != json.Number("0") || acc["subscription_until"] != nil {
			t.Errorf("telegram_id %v subscription_until %v", acc["telegram_id"], acc["subscription_until"])
		}
		// An unlimited key: balance null, which the SDK's (int) cast reads as 0.
		_, unl := e.key(keys.CreateParams{})
		acc2, err := (&lsClient{t: t, baseURL: c.baseURL, apiKey: unl}).request("GET", "/v1/account", nil, nil)
		if err != nil || acc2["balance"] != nil {
			t.Errorf("unlimited account balance %v, %v", acc2["balance"], err)
		}
	})
	t.Run("providers", func(t *testing.T) {
		c := &lsClient{t: t, baseURL: c.baseURL, apiKey: c.apiKey}
		ps, err := c.request("GET", "/v1/providers", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkShape(t, "providers", ps, []member{mem("providers", "array")})
		for _, p := range ps["providers"].([]any) {
			pm := p.(map[string]any)
			checkShape(t, "provider", pm, providerShape)
			for _, h := range pm["hosts"].([]any) {
				if jsonType(h) != "string" {
					t.Errorf("host %v", h)
				}
			}
		}
	})
	t.Run("errors map to the SDK's exceptions", func(t *testing.T) {
		_, poor := e.key(keys.CreateParams{Credits: ptr[int64](1)})
		_, reader := e.key(keys.CreateParams{Scopes: []string{}})
		_, noQuota := e.key(keys.CreateParams{DailyQuota: ptr[int64](0)})
		_, slow := e.key(keys.CreateParams{RateLimit: ptr(1)})
		cases := []struct {
			name   string
			key    string
			call   func(c *lsClient) error
			status int
			class  string
		}{
			{"invalid key", "sk_live_nope", func(c *lsClient) error { _, err := c.resolve("https://sho.rt/x", ""); return err }, 401, "InvalidKeyException"},
			{"invalid request", tok, func(c *lsClient) error { _, err := c.resolve("not a url", ""); return err }, 400, "InvalidRequestException"},
			{"unsupported link", tok, func(c *lsClient) error { _, err := c.resolve("https://example.com/x", ""); return err }, 422, "UnsupportedLinkException"},
			{"link removed", tok, func(c *lsClient) error { _, err := c.resolve("http://sho.rt/gone", ""); return err }, 410, "LinkRemovedException"},
			{"out of credits", poor, func(c *lsClient) error { _, err := c.resolve("https://pre.mi/x", ""); return err }, 402, "OutOfCreditsException"},
			{"forbidden scope", reader, func(c *lsClient) error { _, err := c.resolve("https://sho.rt/x", ""); return err }, 403, "ForbiddenScopeException"},
			{"quota exceeded", noQuota, func(c *lsClient) error { _, err := c.resolve("https://sho.rt/x", ""); return err }, 429, "QuotaExceededException"},
			{"not found", tok, func(c *lsClient) error { _, err := c.getJob("00000000-0000-4000-8000-000000000000"); return err }, 404, "NotFoundException"},
			{"rate limited", slow, func(c *lsClient) error {
				if _, err := c.request("GET", "/v1/providers", nil, nil); err != nil {
					return fmt.Errorf("first request: %w", err)
				}
				_, err := c.request("GET", "/v1/providers", nil, nil)
				return err
			}, 429, "RateLimitedException"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call(&lsClient{t: t, baseURL: e.api.URL, apiKey: tc.key})
				var le *lsError
				if !errors.As(err, &le) {
					t.Fatalf("want an API error, got %v", err)
				}
				if le.status != tc.status || le.class != tc.class {
					t.Errorf("HTTP %d %s, want %d %s", le.status, le.class, tc.status, tc.class)
				}
				switch tc.class {
				case "OutOfCreditsException":
					if le.balance == nil || *le.balance != 1 {
						t.Errorf("balance() %v, want 1", le.balance)
					}
				case "RateLimitedException", "QuotaExceededException":
					if le.retryAfter == nil || *le.retryAfter < 1 {
						t.Errorf("retryAfter() %v, want >= 1", le.retryAfter)
					}
				}
			})
		}
	})
}
