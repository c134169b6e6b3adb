package httpapi_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/linkhop/linkhop/keys"
)

func TestJobOutcomes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		handler   func(n int64) (status int, location string)
		status    string
		errCode   any
		attempts  int64
		wantCost  float64
		wantFinal float64 // balance after, from 5
	}{
		{"done", func(int64) (int, string) { return 301, "https://example.com/x" }, "done", nil, 1, 1, 4},
		{"removed", func(int64) (int, string) { return 404, "" }, "failed", "link_removed", 1, 0, 5},
		{"gone", func(int64) (int, string) { return 410, "" }, "failed", "link_removed", 1, 0, 5},
		{"down", func(int64) (int, string) { return 503, "" }, "failed", "provider_down", 3, 0, 5},
		{"recovers", func(n int64) (int, string) {
			if n < 3 {
				return 500, ""
			}
			return 302, "https://example.com/y"
		}, "done", nil, 3, 1, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var hits atomic.Int64
			e := newEnv(t, envOptions{worker: true, shortFn: func(w http.ResponseWriter, r *http.Request) {
				status, loc := tc.handler(hits.Add(1))
				if loc != "" {
					w.Header().Set("Location", loc)
				}
				w.WriteHeader(status)
			}})
			c, tok := e.key(keys.CreateParams{Credits: ptr[int64](5)})
			r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/" + tc.name})
			if r.status != 202 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			job := e.waitJob(tok, r.body["job_id"].(string))
			if job["status"] != tc.status || job["error"] != tc.errCode {
				t.Fatalf("job = %v", job)
			}
			if tc.errCode != nil {
				if d, _ := job["error_detail"].(string); d == "" {
					t.Errorf("no error_detail: %v", job)
				}
			}
			if got := hits.Load(); got != tc.attempts {
				t.Errorf("upstream requests %d, want %d", got, tc.attempts)
			}
			if job["credits_charged"] != tc.wantCost || job["balance"] != tc.wantFinal {
				t.Errorf("credits_charged %v balance %v; want %v, %v", job["credits_charged"], job["balance"], tc.wantCost, tc.wantFinal)
			}
			k, err := e.keys.Get(context.Background(), c.ID)
			if err != nil || k.Credits == nil || float64(*k.Credits) != tc.wantFinal {
				t.Errorf("stored balance %v, %v", k.Credits, err)
			}
		})
	}
}
