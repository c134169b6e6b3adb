package httpapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/problem"
)

// The bad-input sweep (docs/reliability.md): every endpoint gets malformed and hostile input, and every
// answer must be complete — a problem+json of the right code for every non-2xx, never a 5xx,
// never a hang. Requests go over raw TCP so that the test, not Go's client, decides what is
// sent (control characters in paths and headers, odd methods, chunked bodies, lying lengths).

// sweepTimeout bounds each request: an answer later than this is a hang.
const sweepTimeout = 10 * time.Second

// rawReq is one hand-written HTTP/1.1 request.
type rawReq struct {
	method  string
	path    string // sent as is on the request line
	headers []string
	body    []byte
	chunked bool   // send the body chunked, without Content-Length
	noLen   bool   // send neither Content-Length nor chunked framing
	raw     string // when set, sent instead of all of the above
}

// rawAnswer is what came back.
type rawAnswer struct {
	status int
	header http.Header
	body   []byte
}

// send writes r to addr on a fresh connection and reads one response, within sweepTimeout.
func send(t *testing.T, addr string, r rawReq) rawAnswer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, sweepTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(sweepTimeout))
	var b bytes.Buffer
	if r.raw != "" {
		if r.method == "" {
			r.method = "GET"
		}
		b.WriteString(r.raw)
		r.noLen, r.chunked = true, false
	}
	if r.raw == "" {
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: linkhop.test\r\nConnection: close\r\n", r.method, r.path)
		for i := 0; i+1 < len(r.headers); i += 2 {
			fmt.Fprintf(&b, "%s: %s\r\n", r.headers[i], r.headers[i+1])
		}
	}
	switch {
	case r.raw != "":
	case r.chunked:
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for rest := r.body; len(rest) > 0; {
			n := min(len(rest), 4096)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n\r\n")
	case r.noLen:
		b.WriteString("\r\n")
	default:
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(r.body))
		b.Write(r.body)
	}
	// Write in the background: a server that answers before reading a large body (413) may
	// stop reading, and the answer is what counts.
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(b.Bytes())
		werr <- err
	}()
	res, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: r.method})
	if err != nil {
		t.Fatalf("%s %.80q: no answer within %v: %v (write: %v)", r.method, r.path, sweepTimeout, err, waitErr(werr))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %.80q: reading the body: %v", r.method, r.path, err)
	}
	_ = conn.Close()
	<-werr
	return rawAnswer{status: res.StatusCode, header: res.Header, body: body}
}

func waitErr(c chan error) error {
	select {
	case err := <-c:
		return err
	case <-time.After(time.Second):
		return fmt.Errorf("still writing")
	}
}

// expect is what a sweep case may answer: a status and code, or (status 0) anything that is
// not a 5xx and, when not 2xx, a complete problem.
type expect struct {
	status int
	code   problem.Code
	// protocol marks requests that Go's HTTP/1.1 server refuses while parsing them, before
	// linkhop's handler runs: it answers in plain text, and the status is all there is to check.
	protocol bool
}

// checkAnswer holds a to docs/api.md and docs/errors.md: never 5xx; every non-2xx a complete problem+json of a
// known code whose status, title and type match; Retry-After on 429/503; Allow on 405.
func checkAnswer(t *testing.T, what string, a rawAnswer, want expect) {
	t.Helper()
	if want.protocol {
		if a.status != want.status {
			t.Errorf("%s: net/http answered %d, want %d: %.200q", what, a.status, want.status, a.body)
		}
		return
	}
	if a.status >= 500 {
		t.Errorf("%s: %d (5xx) %s", what, a.status, a.body)
		return
	}
	if want.status != 0 && a.status != want.status {
		t.Errorf("%s: status %d, want %d; body %.300s", what, a.status, want.status, a.body)
		return
	}
	if a.status < 400 {
		if a.status >= 300 {
			t.Errorf("%s: redirect %d to %q instead of an answer", what, a.status, a.header.Get("Location"))
		}
		return
	}
	if ct := a.header.Get("Content-Type"); ct != problem.ContentType {
		t.Errorf("%s: %d with content type %q, want %s; body %.200q", what, a.status, ct, problem.ContentType, a.body)
		return
	}
	var p map[string]any
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Errorf("%s: problem body is not JSON: %v: %.200q", what, err, a.body)
		return
	}
	for _, f := range []string{"type", "title", "status", "code", "detail", "instance"} {
		if _, ok := p[f]; !ok {
			t.Errorf("%s: problem lacks %q: %s", what, f, a.body)
		}
	}
	code := problem.Code(fmt.Sprint(p["code"]))
	if want.code != "" && code != want.code {
		t.Errorf("%s: code %s, want %s; body %s", what, code, want.code, a.body)
	}
	known := false
	for _, c := range problem.Codes() {
		known = known || c == code
	}
	switch {
	case !known:
		t.Errorf("%s: unknown code %q", what, code)
	case code.Status() != a.status || p["status"] != float64(a.status):
		t.Errorf("%s: code %s with HTTP %d and status member %v", what, code, a.status, p["status"])
	case p["title"] != code.Title() || p["type"] != code.Type():
		t.Errorf("%s: title %v / type %v do not match code %s", what, p["title"], p["type"], code)
	case p["instance"] != a.header.Get("X-Request-Id") || a.header.Get("X-Request-Id") == "":
		t.Errorf("%s: instance %v, X-Request-Id %q", what, p["instance"], a.header.Get("X-Request-Id"))
	}
	if (a.status == 429 || a.status == 503) && a.header.Get("Retry-After") == "" {
		t.Errorf("%s: %d without Retry-After", what, a.status)
	}
	if a.status == 405 && a.header.Get("Allow") == "" {
		t.Errorf("%s: 405 without Allow", what)
	}
}

// sweepCase is one request of the sweep and what it must answer.
type sweepCase struct {
	name string
	req  rawReq
	want expect
}

func TestBadInputSweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{tweakCfg: func(c *config.Config) {
		// The sweep sends many bad keys from one address; the failed-auth limit has its own tests.
		c.AuthFailuresPerMinute = 1_000_000
	}})
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0)})
	addr := strings.TrimPrefix(e.api.URL, "http://")
	auth := "Bearer " + tok
	const job = "/v1/jobs/00000000-0000-4000-8000-000000000000"

	var cases []sweepCase
	add := func(name string, r rawReq, want expect) {
		cases = append(cases, sweepCase{name, r, want})
	}
	post := func(body string, hdr ...string) rawReq {
		return rawReq{method: "POST", path: "/v1/resolve", body: []byte(body),
			headers: append([]string{"Authorization", auth, "Content-Type", "application/json"}, hdr...)}
	}
	bad := expect{status: 400, code: problem.InvalidRequest}
	unsupported := expect{status: 422, code: problem.UnsupportedLink}
	queued := expect{status: 202, code: ""}

	// Every endpoint, every method, with and without a key.
	endpoints := []struct {
		path  string
		allow string // the method the route serves
		authn bool
	}{
		{"/v1/resolve", "POST", true}, {"/v1/resolve/batch", "POST", true}, {job, "GET", true},
		{"/v1/jobs?ids=" + job[9:], "GET", true}, {"/v1/providers", "GET", true},
		{"/v1/account", "GET", true}, {job + "/webhook/redeliver", "POST", true},
		{"/healthz", "GET", false}, {"/readyz", "GET", false}, {"/metrics", "GET", false},
		{"/openapi.json", "GET", false},
	}
	for _, ep := range endpoints {
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECTX", "BREW"} {
			if m == ep.allow || (m == "GET" && ep.allow == "GET") {
				continue
			}
			add(m+" "+ep.path, rawReq{method: m, path: ep.path, headers: []string{"Authorization", auth}},
				expect{status: 405, code: problem.MethodNotAllowed})
		}
		if !ep.authn {
			continue
		}
		for name, h := range map[string]string{
			"no bearer":         "",
			"empty bearer":      "Bearer ",
			"basic":             "Basic dXNlcjpwdw==",
			"huge token":        "Bearer sk_live_" + strings.Repeat("A", 16<<10),
			"token with nul":    "Bearer sk_live_%00",
			"unicode token":     "Bearer sk_live_ключ",
			"two tokens":        auth + " " + auth,
			"wrong secret":      auth[:len(auth)-4] + "AAAA",
			"id only":           "Bearer sk_live_aaaaaaaaaaaaaaaa",
			"sql-ish":           "Bearer ' OR 1=1 --",
			"braces in id":      "Bearer sk_live_{k:x}_" + strings.Repeat("A", 43),
			"hash tag escape":   "Bearer sk_live_aaaa}:key_" + strings.Repeat("A", 43),
			"invalid utf-8 key": "Bearer sk_live_\xff\xfe",
		} {
			r := rawReq{method: ep.allow, path: ep.path, headers: []string{"Authorization", h}}
			switch ep.path {
			case "/v1/resolve":
				r.headers = append(r.headers, "Content-Type", "application/json")
				r.body = []byte(`{"url":"https://bit.ly/x"}`)
			case "/v1/resolve/batch":
				r.headers = append(r.headers, "Content-Type", "application/json")
				r.body = []byte(`{"items":[{"url":"https://bit.ly/x"}]}`)
			}
			add(name+" "+ep.path, r, expect{status: 401, code: problem.InvalidKey})
		}
		// A GET with a hostile body: ignored, never a hang.
		if ep.allow == "GET" {
			want := expect{status: 200, code: ""}
			if ep.path == job {
				want = expect{status: 404, code: problem.NotFound}
			}
			add("GET with a body "+ep.path, rawReq{method: "GET", path: ep.path, headers: []string{"Authorization", auth},
				body: bytes.Repeat([]byte("["), 200<<10)}, want)
			add("GET with chunked body "+ep.path, rawReq{method: "GET", path: ep.path, headers: []string{"Authorization", auth},
				body: []byte(`{"url":"\u0000"}`), chunked: true}, want)
		}
	}

	// Odd paths: unknown routes and malformed job ids are 404 problems, never a redirect.
	for _, p := range []string{
		"/", "/v1", "/v1/", "/v1/jobs/", "/v1/jobs//", "/v1/resolve/batch/", "/v1/resolve/Batch", "/v1//jobs/x", "/v1/jobs/../account",
		"/v1/./account", "/./v1/account", "/V1/ACCOUNT", "/v1/resolve/", "/v1/resolve%00", "/v1/jobs/%00",
		"/v1/jobs/%2e%2e", "/v1/jobs/..%2Faccount", "/v1/jobs/" + strings.Repeat("a", 2049),
		"/v1/jobs/" + strings.Repeat("%41", 3000), "/v1/jobs/ü", "/v1/jobs/%C3%BC", "/v1/jobs/%ff%fe",
		"/v1/jobs/00000000-0000-4000-8000-00000000000G", "/v1/jobs/00000000-0000-4000-8000-000000000000%0a",
		"/v1/jobs/{00000000-0000-4000-8000-000000000000}", "/v1/jobs/00000000000040008000000000000000",
		"/v1/jobs/urn:uuid:00000000-0000-4000-8000-000000000000", "/v1/jobs/" + strings.ToUpper(job[9:]),
		"/v1/jobs/00000000-0000-4000-8000-000000000000/", "/v1/jobs/00000000-0000-4000-8000-000000000000;x",
		"/v1/jobs/00000000-0000-4000-8000-000000000000/webhook", "/admin/keys", "/admin/queues/", "/admin",
		"/admin/%2e%2e/v1/account", "/ADMIN/keys", "/v1/jobs/00000000-0000-4000-8000-000000000000/webhook/redeliver/",
		"/%2e%2e/%2e%2e/etc/passwd", "/metrics/../v1/account", "//v1/account",
	} {
		add("path "+p, rawReq{method: "GET", path: p, headers: []string{"Authorization", auth}}, expect{status: 404, code: problem.NotFound})
	}
	// Redelivery: the body is ignored, the job must be the key's and have a webhook.
	for name, body := range map[string]string{"no body": "", "garbage body": "\x00{[", "huge body": strings.Repeat("x", 100<<10)} {
		add("redeliver "+name, rawReq{method: "POST", path: job + "/webhook/redeliver", body: []byte(body),
			headers: []string{"Authorization", auth, "Content-Type", "text/plain"}}, expect{status: 404, code: problem.NotFound})
	}
	for _, id := range []string{"x", "%00", "..", strings.Repeat("a", 2049), strings.ToUpper(job[9:])} {
		add("redeliver id "+trunc(id), rawReq{method: "POST", path: "/v1/jobs/" + id + "/webhook/redeliver",
			headers: []string{"Authorization", auth}}, expect{status: 404, code: problem.NotFound})
	}

	// Query strings and fragments do not change routing.
	add("query on account", rawReq{method: "GET", path: "/v1/account?x=%00&y=" + strings.Repeat("z", 4000),
		headers: []string{"Authorization", auth}}, expect{status: 200, code: ""})

	// Hostile request ids and headers.
	for name, v := range map[string]string{
		"long":         strings.Repeat("r", 5000),
		"quotes":       `"><script>`,
		"unicode":      "ид",
		"crlf encoded": "a%0d%0aSet-Cookie:x",
	} {
		add("request id "+name, rawReq{method: "GET", path: "/v1/account", headers: []string{"Authorization", auth, "X-Request-Id", v}}, expect{status: 200, code: ""})
	}

	// Bodies: framing, media type, size.
	big := `{"url":"https://bit.ly/` + strings.Repeat("a", 70<<10) + `"}`
	add("413 with length", post(big), expect{status: 413, code: problem.PayloadTooLarge})
	add("413 chunked", rawReq{method: "POST", path: "/v1/resolve", chunked: true, body: []byte(big),
		headers: []string{"Authorization", auth, "Content-Type", "application/json"}}, expect{status: 413, code: problem.PayloadTooLarge})
	add("413 1 MiB", post(strings.Repeat(" ", 1<<20)), expect{status: 413, code: problem.PayloadTooLarge})
	add("413 declared only", rawReq{method: "POST", path: "/v1/resolve", noLen: true,
		headers: []string{"Authorization", auth, "Content-Type", "application/json", "Content-Length", "99999999999"}},
		expect{status: 413, code: problem.PayloadTooLarge})
	add("chunked ok", rawReq{method: "POST", path: "/v1/resolve", chunked: true, body: []byte(`{"url":"https://bit.ly/chunked"}`),
		headers: []string{"Authorization", auth, "Content-Type", "application/json"}}, queued)
	add("no body", rawReq{method: "POST", path: "/v1/resolve", headers: []string{"Authorization", auth, "Content-Type", "application/json"}}, bad)
	for ct, want := range map[string]expect{
		"":                                  {status: 415, code: problem.UnsupportedMediaType},
		"text/plain":                        {status: 415, code: problem.UnsupportedMediaType},
		"application/x-www-form-urlencoded": {status: 415, code: problem.UnsupportedMediaType},
		"application/problem+json":          {status: 415, code: problem.UnsupportedMediaType},
		"application/json-seq":              {status: 415, code: problem.UnsupportedMediaType},
		"application/json;;;":               {status: 415, code: problem.UnsupportedMediaType},
		"multipart/form-data; boundary=x":   {status: 415, code: problem.UnsupportedMediaType},
		"APPLICATION/JSON":                  queued,
		"application/json; charset=utf-8":   queued,
	} {
		add("content type "+ct, rawReq{method: "POST", path: "/v1/resolve", body: []byte(`{"url":"https://bit.ly/ct"}`),
			headers: []string{"Authorization", auth, "Content-Type", ct}}, want)
	}

	// Hostile JSON.
	deep := func(open, close string, n int) string { return strings.Repeat(open, n) + strings.Repeat(close, n) }
	for name, body := range map[string]string{
		"deep arrays":             deep("[", "]", 30000),
		"deep objects":            `{"url":` + deep(`{"a":`, "}", 9000) + `}`,
		"deep in unknown field":   `{"url":"https://bit.ly/x","x":` + deep("[", "]", 20000) + `}`,
		"deep in url":             `{"url":` + deep("[", "]", 20000) + `}`,
		"unclosed deep":           `{"url":` + strings.Repeat("[", 30000),
		"huge string":             `{"url":"https://bit.ly/` + strings.Repeat("a", 60000) + `"}`,
		"huge escaped string":     `{"url":"` + strings.Repeat(`\u0041`, 10000) + `"}`,
		"huge number":             `{"url":1` + strings.Repeat("0", 60000) + `}`,
		"exponent":                `{"url":1e999999999}`,
		"nul raw":                 "{\"url\":\"https://bit.ly/a\x00b\"}",
		"nul outside":             "{\"url\":\"https://bit.ly/a\"}\x00",
		"nul escaped":             `{"url":"https://bit.ly/a\u0000b"}`,
		"invalid utf-8":           "{\"url\":\"https://bit.ly/\xff\xfe\"}",
		"overlong utf-8":          "{\"url\":\"https://bit.ly/\xc0\xaf\"}",
		"invalid utf-8 key":       "{\"\xff\":1}",
		"utf-16":                  "\xff\xfe{\x00\"\x00u\x00r\x00l\x00\"\x00}\x00",
		"bom":                     "\xef\xbb\xbf{\"url\":\"https://bit.ly/x\"}",
		"lone surrogate in key":   `{"\ud800url":"https://bit.ly/x"}`,
		"case-folded key":         `{"URL":"https://bit.ly/x","Url":"https://bit.ly/y"}`,
		"key with nul":            `{"url\u0000":"https://bit.ly/x"}`,
		"duplicate keys":          `{"url":"https://bit.ly/a","url":"https://bit.ly/b"}`,
		"duplicate webhook":       `{"url":"https://bit.ly/a","webhook_url":"https://hooks.example.com/a","webhook_url":"https://hooks.example.com/b"}`,
		"duplicate idem key":      `{"url":"https://bit.ly/a","idempotency_key":"a","idempotency_key":"b"}`,
		"proto pollution":         `{"url":"https://bit.ly/x","__proto__":{"admin":true}}`,
		"url object":              `{"url":{"href":"https://bit.ly/x"}}`,
		"url array":               `{"url":["https://bit.ly/x"]}`,
		"url bool":                `{"url":true}`,
		"url null":                `{"url":null}`,
		"webhook array":           `{"url":"https://bit.ly/x","webhook_url":[]}`,
		"idem number":             `{"url":"https://bit.ly/x","idempotency_key":1}`,
		"comment":                 `{"url":"https://bit.ly/x" /* hi */}`,
		"single quotes":           `{'url':'https://bit.ly/x'}`,
		"trailing comma":          `{"url":"https://bit.ly/x",}`,
		"unquoted key":            `{url:"https://bit.ly/x"}`,
		"NaN":                     `{"url":NaN}`,
		"two objects":             `{"url":"https://bit.ly/x"}{"url":"https://bit.ly/y"}`,
		"object then garbage":     `{"url":"https://bit.ly/x"}garbage`,
		"string":                  `"https://bit.ly/x"`,
		"number":                  `42`,
		"whitespace only":         " \t\r\n ",
		"truncated":               `{"url":"https://bit.ly/x`,
		"bad escape":              `{"url":"https://bit.ly/\x"}`,
		"short unicode escape":    `{"url":"\u12"}`,
		"many fields":             "{" + strings.Repeat(`"a":1,`, 8000) + `"url":"https://bit.ly/x"}`,
		"empty key":               `{"":"https://bit.ly/x"}`,
		"form encoded":            `url=https%3A%2F%2Fbit.ly%2Fx`,
		"xml":                     `<url>https://bit.ly/x</url>`,
		"yaml":                    "url: https://bit.ly/x\n",
		"control char in literal": "{\"url\":\"https://bit.ly/\t\"}",
	} {
		add("json "+name, post(body), bad)
	}
	// Trailing whitespace after the object is not data.
	add("json trailing newline", post(`{"url":"https://bit.ly/nl"}`+"\r\n\t "), queued)
	add("json null optional fields", post(`{"url":"https://bit.ly/nulls","webhook_url":null,"idempotency_key":null}`), queued)

	// Batches: the same strictness at 1 MiB and BATCH_MAX_ITEMS (100 here), every mistake one 400.
	batch := func(body string) rawReq {
		return rawReq{method: "POST", path: "/v1/resolve/batch", body: []byte(body),
			headers: []string{"Authorization", auth, "Content-Type", "application/json"}}
	}
	item := `{"url":"https://bit.ly/b"}`
	nItems := func(n int) string { return `{"items":[` + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + `]}` }
	ok200 := expect{status: 200, code: ""}
	for name, body := range map[string]string{
		"deep arrays":          deep("[", "]", 30000),
		"deep items":           `{"items":` + deep("[", "]", 30000) + `}`,
		"deep in item":         `{"items":[{"url":` + deep(`{"a":`, "}", 9000) + `}]}`,
		"deep in item field":   `{"items":[{"url":"https://bit.ly/x","x":` + deep("[", "]", 20000) + `}]}`,
		"unclosed deep":        `{"items":[` + strings.Repeat("[", 30000),
		"1,001 items":          nItems(1001),
		"101 items":            nItems(101),
		"no items":             `{"items":[]}`,
		"items null":           `{"items":null}`,
		"items string":         `{"items":"https://bit.ly/x"}`,
		"items object":         `{"items":{"url":"https://bit.ly/x"}}`,
		"item null":            `{"items":[null]}`,
		"item number":          `{"items":[1]}`,
		"item array":           `{"items":[["https://bit.ly/x"]]}`,
		"item without url":     `{"items":[{}]}`,
		"item url null":        `{"items":[{"url":null}]}`,
		"item url object":      `{"items":[{"url":{"href":"https://bit.ly/x"}}]}`,
		"item unknown field":   `{"items":[{"url":"https://bit.ly/x","admin":true}]}`,
		"item case-folded key": `{"items":[{"URL":"https://bit.ly/x"}]}`,
		"duplicate items":      `{"items":[` + item + `],"items":[` + item + `]}`,
		"duplicate item key":   `{"items":[{"url":"https://bit.ly/a","url":"https://bit.ly/b"}]}`,
		"duplicate webhook":    `{"items":[` + item + `],"webhook_url":"https://hooks.example.com/a","webhook_url":"https://hooks.example.com/b"}`,
		"bad default webhook":  `{"items":[` + item + `],"webhook_url":"https://127.0.0.1/"}`,
		"trailing data":        nItems(1) + `{}`,
		"proto pollution":      `{"items":[` + item + `],"__proto__":{}}`,
		"huge item count key":  `{"items":[` + item + `],"` + strings.Repeat("k", 100000) + `":1}`,
	} {
		add("batch "+name, batch(body), bad)
	}
	add("batch 100 items", batch(nItems(100)), ok200)
	add("batch 1 MiB", batch(strings.Repeat(" ", 1<<20+1)), expect{status: 413, code: problem.PayloadTooLarge})
	add("batch 1 MiB chunked", rawReq{method: "POST", path: "/v1/resolve/batch", chunked: true, body: []byte(`{"items":[{"url":"` + strings.Repeat("a", 1<<20) + `"}]}`),
		headers: []string{"Authorization", auth, "Content-Type", "application/json"}}, expect{status: 413, code: problem.PayloadTooLarge})
	add("batch declared 1 GiB", rawReq{method: "POST", path: "/v1/resolve/batch", noLen: true,
		headers: []string{"Authorization", auth, "Content-Type", "application/json", "Content-Length", "1073741824"}},
		expect{status: 413, code: problem.PayloadTooLarge})
	add("batch over 64 KiB", batch(`{"items":[{"url":"https://bit.ly/`+strings.Repeat("a", 100<<10)+`"}]}`), ok200)
	add("batch not json", rawReq{method: "POST", path: "/v1/resolve/batch", body: []byte(item),
		headers: []string{"Authorization", auth, "Content-Type", "text/plain"}}, expect{status: 415, code: problem.UnsupportedMediaType})
	add("batch idempotency header", rawReq{method: "POST", path: "/v1/resolve/batch", body: []byte(nItems(1)),
		headers: []string{"Authorization", auth, "Content-Type", "application/json", "Idempotency-Key", "k"}}, bad)
	// Job lists: 1 to 100 ids, none empty; a malformed id is a null entry, not an error.
	ids := func(q string) rawReq {
		return rawReq{method: "GET", path: "/v1/jobs" + q, headers: []string{"Authorization", auth}}
	}
	for name, q := range map[string]string{
		"no ids": "", "empty": "?ids=", "empty id": "?ids=a,,b", "leading comma": "?ids=,a", "101 ids": "?ids=" + strings.Repeat("a,", 100) + "a",
		"twice": "?ids=a&ids=b", "bad escape": "?ids=%zz", "only commas": "?ids=,,,",
	} {
		add("jobs "+name, ids(q), bad)
	}
	for name, q := range map[string]string{
		"100 malformed": "?ids=" + strings.Repeat("x,", 99) + "x", "nul": "?ids=%00", "huge id": "?ids=" + strings.Repeat("a", 4000),
		"braces": "?ids=%7Bk:x%7D", "unknown": "?ids=" + job[9:], "with other params": "?ids=" + job[9:] + "&x=1",
	} {
		add("jobs "+name, ids(q), ok200)
	}

	// Odd URLs. A provider host in any spelling that parses to it is accepted; everything
	// else is a 400 (not a URL we take) or a 422 (a URL, but not one we resolve).
	long := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }
	for u, want := range map[string]expect{
		long("https://bit.ly/", 2048):          queued,
		long("https://bit.ly/", 2049):          bad,
		long("https://bit.ly/", 60000):         bad,
		"https://BIT.LY/Case":                  queued,
		"HTTPS://bit.ly/scheme-case":           queued,
		"https://bit.ly./trailing-dot":         queued,
		"https://www.bit.ly/www":               queued,
		"https://bit.ly:443/port":              queued,
		"https://bit.ly:8443/odd-port":         queued,
		"https://bit.ly/%00":                   queued,
		"https://bit.ly/a?u=http://127.0.0.1/": queued,
		"https://bit.ly/#frag":                 queued,
		"https://bit.ly/ü":                     queued,
		"https://bit.ly:0/zero-port":           bad,
		"https://bit.ly:99999/huge-port":       bad,
		"https://bit.ly:-1/":                   bad,
		"https://bit.ly:port/":                 bad,
		// IDN and look-alikes: not the provider.
		"https://bіt.ly/cyrillic-i":      unsupported,
		"https://xn--bt-nmc.ly/punycode": unsupported,
		"https://ｂｉｔ.ｌｙ/fullwidth":       unsupported,
		"https://bit.ly\u3002x/ideo-dot": unsupported,
		"https://bücher.example/x":       unsupported,
		"https://bit.ly.evil.example/x":  unsupported,
		"https://evilbit.ly/x":           unsupported,
		// IP literals and encodings of internal addresses.
		"http://127.0.0.1/x":                      unsupported,
		"http://2130706433/x":                     unsupported,
		"http://0x7f.1/x":                         unsupported,
		"http://127.1/x":                          unsupported,
		"http://0/x":                              unsupported,
		"http://[::1]/x":                          unsupported,
		"http://[::ffff:127.0.0.1]/x":             unsupported,
		"http://[::ffff:7f00:1]/x":                unsupported,
		"http://[64:ff9b::7f00:1]/x":              unsupported,
		"http://[fe80::1%25eth0]/x":               unsupported,
		"http://[fd00::1]:80/x":                   unsupported,
		"http://169.254.169.254/latest/meta-data": unsupported,
		"http://metadata.google.internal/x":       unsupported,
		"http://localhost/x":                      unsupported,
		"http://[::1/x":                           bad,
		"http://[bit.ly]/x":                       bad,
		"http://[]/x":                             bad,
		// Percent-encoded hosts: RFC 3986 allows escapes in a host only for non-ASCII bytes,
		// so an escaped ASCII byte makes an invalid URL.
		"http://127%2E0%2E0%2E1/x": bad,
		"http://%31%32%37.0.0.1/x": bad,
		"http://bit%2Ely/x":        bad,
		"http://b%C4%B1t.ly/x":     unsupported, // dotless ı, escaped
		"http://bit.ly%00.evil/x":  bad,
		"http://bit.ly%2F@evil/x":  bad,
		"http://%zz/x":             bad,
		"http://bit.ly%252e/x":     unsupported, // an escaped "%" is allowed, and no provider
		// Userinfo in every disguise.
		"https://user@bit.ly/x":           bad,
		"https://user:pw@bit.ly/x":        bad,
		"https://@bit.ly/x":               bad,
		"https://:@bit.ly/x":              bad,
		"https://bit.ly@127.0.0.1/x":      bad,
		"https://bit.ly:443@127.0.0.1/x":  bad,
		"https://127.0.0.1#@bit.ly/x":     unsupported,
		"https://127.0.0.1?@bit.ly/x":     unsupported,
		"https://bit.ly\\@127.0.0.1/x":    bad,
		"https://bit.ly%40127.0.0.1/x":    bad,
		"https://user%40bit.ly@evil.com/": bad,
		// Schemes and shapes.
		"bit.ly/x":                       bad,
		"//bit.ly/x":                     bad,
		"/x":                             bad,
		"https:bit.ly/x":                 bad,
		"https:/bit.ly/x":                bad,
		"https:///bit.ly/x":              bad,
		"javascript:alert(1)":            bad,
		"data:text/html,hi":              bad,
		"file:///etc/passwd":             bad, // no host
		"file://localhost/etc/passwd":    unsupported,
		"gopher://bit.ly/x":              unsupported,
		"ftp://bit.ly/x":                 unsupported,
		"ws://bit.ly/x":                  unsupported,
		"https+unix://bit.ly/x":          unsupported,
		"ht\ttp://bit.ly/x":              bad,
		"https://bit.ly/a b":             bad,
		"https://bit.ly/\u0085":          queued, // NEL is a Unicode control, not an ASCII one
		"https://bit.ly/\u202e":          queued, // bidi override in a path: odd, harmless
		" https://bit.ly/x":              bad,
		"https://bit.ly/x ":              bad,
		"https://bit.ly/x\n":             bad,
		"https://bit.ly/x\r\nHost: evil": bad,
		"https://bit.ly/\x01":            bad,
		"https://bit.ly/\x7f":            bad,
		"https://bit.ly/\x1b[31m":        bad,
		"https://bit.ly\t/x":             bad,
		"":                               bad,
	} {
		body, _ := json.Marshal(map[string]string{"url": u})
		add("url "+strconv.Quote(trunc(u)), post(string(body)), want)
	}

	// Odd webhook URLs: https to a public host name only (private targets are off here).
	for u, want := range map[string]expect{
		"https://hooks.example.com/x":            queued,
		"https://HOOKS.example.com:8443/x":       queued,
		"https://bücher.example/x":               queued, // an IDN host is a public name
		long("https://hooks.example.com/", 2048): queued,
		long("https://hooks.example.com/", 2049): bad,
		"http://hooks.example.com/x":             bad,
		"ftp://hooks.example.com/x":              bad,
		"https://127.0.0.1/x":                    bad,
		"https://2130706433/x":                   bad,
		"https://0x7f000001/x":                   bad,
		"https://[::1]/x":                        bad,
		"https://[::ffff:10.0.0.1]/x":            bad,
		"https://[64:ff9b::a00:1]/x":             bad,
		"https://[fe80::1%25eth0]/x":             bad,
		"https://169.254.169.254/x":              bad,
		"https://100.100.100.200/x":              bad,
		"https://192.168.1.1/x":                  bad,
		"https://0.0.0.0/x":                      bad,
		"https://224.0.0.1/x":                    bad,
		"https://localhost/x":                    bad,
		"https://a.localhost/x":                  bad,
		"https://LOCALHOST./x":                   bad,
		"https://metadata.google.internal/":      bad,
		"https://printer.local/x":                bad,
		"https://127%2E0%2E0%2E1/x":              bad,
		"https://user@hooks.example.com/x":       bad,
		"https://hooks.example.com@10.0.0.1/":    bad,
		"https://hooks.example.com/\x00":         bad,
		"https://hooks.example.com/\r\n":         bad,
		"hooks.example.com/x":                    bad,
		"":                                       bad,
	} {
		body, _ := json.Marshal(map[string]string{"url": "https://bit.ly/hook", "webhook_url": u})
		add("webhook "+strconv.Quote(trunc(u)), post(string(body)), want)
	}

	// Idempotency keys, in the body and the header.
	for k, want := range map[string]expect{
		"k":                        queued,
		strings.Repeat("k", 128):   queued,
		"~!@#$%^&*()_+{}|:<>? '\"": queued,
		strings.Repeat("k", 129):   bad,
		"":                         bad,
		"tab\there":                bad,
		"nul\x00":                  bad,
		"del\x7f":                  bad,
		"ключ":                     bad,
		"\xff":                     bad,
	} {
		body, _ := json.Marshal(map[string]string{"url": "https://bit.ly/idem", "idempotency_key": k})
		if want == queued {
			// Distinct keys so each case is a first request; a replay of another case's key
			// would be a conflict.
			body, _ = json.Marshal(map[string]string{"url": "https://bit.ly/idem/" + strconv.Itoa(len(k)), "idempotency_key": k})
		}
		add("idempotency body "+strconv.Quote(trunc(k)), post(string(body)), want)
	}
	for name, h := range map[string]string{
		"too long": strings.Repeat("h", 129),
		"unicode":  "ключ",
		"high":     "\xff\xfe",
	} {
		add("idempotency header "+name, post(`{"url":"https://bit.ly/hdr"}`, "Idempotency-Key", h), bad)
	}

	// Framing errors: Go's net/http refuses these itself, in plain text, before any linkhop
	// code runs (nothing is read or created). Pinned here so a change of that layer is seen;
	// docs/reliability.md lists them. The 501 for an unknown transfer coding is RFC 9112 §6.1's.
	framing := func(status int) expect { return expect{status: status, protocol: true} }
	acct := "GET /v1/account HTTP/1.1\r\nHost: linkhop.test\r\nConnection: close\r\nAuthorization: " + auth + "\r\n"
	for name, c := range map[string]struct {
		raw  string
		want expect
	}{
		"control char in header value": {acct + "X-Odd: a\x01b\r\n\r\n", framing(400)},
		"space in header name":         {acct + "X Odd: a\r\n\r\n", framing(400)},
		"no colon":                     {acct + "XOdd\r\n\r\n", framing(400)},
		"header block over 1 MiB":      {acct + "X-Big: " + strings.Repeat("b", 1<<20+4096) + "\r\n\r\n", framing(431)},
		"garbage request line":         {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", framing(400)},
		"request line without version": {"GET /v1/account\r\n\r\n", framing(400)},
		"nul in path":                  {"GET /v1/\x00 HTTP/1.1\r\nHost: x\r\n\r\n", framing(400)},
		"no host":                      {"GET /v1/account HTTP/1.1\r\nConnection: close\r\n\r\n", framing(400)},
		"two hosts":                    {"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", framing(400)},
		"two different lengths": {"POST /v1/resolve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
			"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", framing(400)},
		"negative length":         {"POST /v1/resolve HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", framing(400)},
		"length and chunked":      {"POST /v1/resolve HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", expect{status: 401, code: problem.InvalidKey}}, // chunked wins,
		"bad chunk size":          {"POST /v1/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", expect{status: 400, code: problem.InvalidRequest}},
		"unknown transfer coding": {"POST /v1/resolve HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", framing(501)},
	} {
		add("framing "+name, rawReq{raw: c.raw}, c.want)
	}

	// Every case, a few at a time, each on its own connection.
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkAnswer(t, c.name, send(t, addr, c.req), c.want)
		})
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// TestAdminBadInputSweep: /admin with its token set gets the same treatment: hostile bodies,
// odd key ids and methods are complete problems, never a 5xx or a hang. Without the right
// token every /admin path is a 401 whatever the request (404 without a token configured is
// covered by the sweep above, whose API has none).
func TestAdminBadInputSweep(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, adminToken, 1_000_000)
	c, _ := e.key(keys.CreateParams{})
	addr := strings.TrimPrefix(e.api.URL, "http://")
	admin := "Bearer " + adminToken
	var cases []sweepCase
	add := func(name string, r rawReq, want expect) { cases = append(cases, sweepCase{name, r, want}) }
	bad := expect{status: 400, code: problem.InvalidRequest}
	body := func(method, path, b string) rawReq {
		return rawReq{method: method, path: path, body: []byte(b),
			headers: []string{"Authorization", admin, "Content-Type", "application/json"}}
	}
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	for name, b := range map[string]string{
		"empty":            ``,
		"array":            `[]`,
		"deep":             `{"name":` + deep + `}`,
		"unknown field":    `{"name":"x","admin":true}`,
		"duplicate":        `{"name":"x","name":"y"}`,
		"case-folded":      `{"NAME":"x"}`,
		"name number":      `{"name":1}`,
		"scopes string":    `{"name":"x","scopes":"resolve"}`,
		"scopes nested":    `{"name":"x","scopes":[["resolve"]]}`,
		"rate huge":        `{"name":"x","rate_limit_per_minute":1e30}`,
		"rate negative":    `{"name":"x","rate_limit_per_minute":-1}`,
		"rate fraction":    `{"name":"x","rate_limit_per_minute":1.5}`,
		"credits overflow": `{"name":"x","credits":99999999999999999999}`,
		"quota negative":   `{"name":"x","daily_quota":-5}`,
		"nul":              "{\"name\":\"a\x00\"}",
		"invalid utf-8":    "{\"name\":\"\xff\"}",
		"trailing":         `{"name":"x"}{}`,
	} {
		add("create "+name, body("POST", "/admin/keys", b), bad)
	}
	for name, b := range map[string]string{
		"rate null":        `{"rate_limit_per_minute":null}`,
		"rate string":      `{"rate_limit_per_minute":"5"}`,
		"rate overflow":    `{"rate_limit_per_minute":9223372036854775808}`,
		"rate above int32": `{"rate_limit_per_minute":4294967296}`,
		"credits object":   `{"credits":{}}`,
		"duplicate":        `{"credits":1,"credits":2}`,
		"deep":             `{"credits":` + deep + `}`,
		"unknown":          `{"name":"renamed"}`,
	} {
		add("update "+name, body("PATCH", "/admin/keys/"+c.ID, b), bad)
	}
	for name, b := range map[string]string{
		"grace negative": `{"grace":"-1h"}`,
		"grace garbage":  `{"grace":"soon"}`,
		"grace number":   `{"grace":3600}`,
		"grace huge":     `{"grace":"99999999999h"}`,
	} {
		add("rotate "+name, body("POST", "/admin/keys/"+c.ID+"/rotate-webhook-secret", b), bad)
	}
	for _, id := range []string{"key_nope", "x", "%00", "..", "%2e%2e", strings.Repeat("k", 3000), "key_{x}", "key_" + strings.Repeat("a", 16) + "%0a"} {
		for _, m := range []string{"GET", "PATCH", "DELETE"} {
			r := body(m, "/admin/keys/"+id, `{}`)
			add(m+" key "+trunc(id), r, expect{status: 404, code: problem.NotFound})
		}
		add("rotate key "+trunc(id), body("POST", "/admin/keys/"+id+"/rotate-webhook-secret", ``), expect{status: 404, code: problem.NotFound})
	}
	for _, m := range []string{"PUT", "TRACE", "OPTIONS"} {
		add(m+" /admin/keys", body(m, "/admin/keys", `{}`), expect{status: 405, code: problem.MethodNotAllowed})
	}
	for name, h := range map[string]string{
		"none": "", "api-style": "Bearer sk_live_x", "prefix": admin[:len(admin)-1], "longer": admin + "x",
		"basic wrong": "Basic Og==", "huge": "Bearer " + strings.Repeat("t", 16<<10),
	} {
		add("auth "+name, rawReq{method: "GET", path: "/admin/keys", headers: []string{"Authorization", h}},
			expect{status: 401, code: problem.InvalidKey})
		add("auth "+name+" unknown path", rawReq{method: "DELETE", path: "/admin/%00", headers: []string{"Authorization", h}},
			expect{status: 401, code: problem.InvalidKey})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			checkAnswer(t, c.name, send(t, addr, c.req), c.want)
		})
	}
}
