package httpapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/linkhop/linkhop/problem"
)

// FuzzParseBatch feeds arbitrary bodies to the batch decoder (no Redis involved): it must
// never panic, and must either return 1 to BATCH_MAX_ITEMS items or refuse the whole body with
// 400 (naming a field), 413 or 415.
func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"url":"https://bit.ly/x"}]}`,
		`{"items":[{"url":"https://bit.ly/x","webhook_url":null,"idempotency_key":"k"}],"webhook_url":"https://h.example/"}`,
		`{"items":[{"url":"a","url":"b"}]}`,
		`{"items":[{"URL":"x"}]}`,
		`{"items":[]}`, `{"items":null}`, `{"items":[null]}`, `{"items":[[]]}`, `{"items":"x"}`,
		`{"items":[{}]}`, `{"items":[{"url":1}]}`, `{"items":[{"url":"x"}],"items":[]}`,
		`{"items":[[[[[[]]]]]]}`, "{\"items\":[{\"url\":\"\xff\"}]}", `[]`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	s := &Server{}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/v1/resolve/batch", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		items, p := s.parseBatch(httptest.NewRecorder(), r)
		if p == nil {
			if len(items) < 1 || len(items) > DefaultBatchMaxItems {
				t.Fatalf("accepted %d items from %q", len(items), body)
			}
			return
		}
		if items != nil {
			t.Fatalf("items and a problem for %q", body)
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

// FuzzParseIDs feeds arbitrary query strings to the ids parser of GET /v1/jobs: 1 to 100
// non-empty ids, or a 400 naming ids.
func FuzzParseIDs(f *testing.F) {
	for _, s := range []string{"ids=a", "ids=a,b", "ids=", "", "ids=a,,b", "ids=a&ids=b", "ids=%zz", "x=1&ids=a", "ids=,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		ids, p := parseIDs(q)
		if p == nil {
			if len(ids) < 1 || len(ids) > MaxJobIDs {
				t.Fatalf("%d ids from %q", len(ids), q)
			}
			for _, id := range ids {
				if id == "" {
					t.Fatalf("an empty id from %q", q)
				}
			}
			return
		}
		if p.Code != problem.InvalidRequest || len(p.Errors) != 1 || p.Errors[0].Field != "ids" {
			t.Fatalf("problem %+v for %q", p, q)
		}
	})
}
