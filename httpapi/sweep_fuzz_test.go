package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/linkhop/linkhop/problem"
)

// FuzzReadJSON feeds arbitrary bodies to the strict body decoder of POST /v1/resolve (no
// Redis involved): it must never panic, and must either accept an object whose every key is
// exactly one field given once, or refuse with 400, 413 or 415 and a field error list.
func FuzzReadJSON(f *testing.F) {
	for _, s := range []string{
		`{"url":"https://bit.ly/x"}`,
		`{"url":"https://bit.ly/x","webhook_url":"https://h.example/","idempotency_key":"k"}`,
		`{"url":"a","url":"b"}`,
		`{"URL":"https://bit.ly/x"}`,
		`{"url":"x"} {}`,
		`{"url":[[[[[[]]]]]]}`,
		"{\"url\":\"\xff\"}",
		`{"url":"\u0000"}`,
		` {"url":null,"webhook_url":null}` + "\n",
		`[]`, ``, `{`, `{"a":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/v1/resolve", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var req resolveRequest
		p := readJSON(httptest.NewRecorder(), r, &req)
		if p == nil {
			var keys map[string]json.RawMessage
			if err := json.Unmarshal(body, &keys); err != nil {
				t.Fatalf("accepted a body that is not one JSON object: %q: %v", body, err)
			}
			for k := range keys {
				if k != "url" && k != "webhook_url" && k != "idempotency_key" {
					t.Fatalf("accepted key %q in %q", k, body)
				}
			}
			return
		}
		switch p.Code {
		case problem.InvalidRequest:
			if len(p.Errors) == 0 {
				t.Fatalf("invalid_request without errors for %q", body)
			}
		case problem.PayloadTooLarge, problem.UnsupportedMediaType:
		default:
			t.Fatalf("code %s for %q", p.Code, body)
		}
	})
}
