package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/linkhop/linkhop/client"
)

// The tests in this file run against small fake servers: the batch endpoints the real server
// does not have yet, and answers a real server gives only under faults.

func TestResolveBatchAndJobs(t *testing.T) {
	t.Parallel()
	f := newFake()
	srv := f.serve()
	defer srv.Close()
	c := client.New(srv.URL, "sk_live_fake")
	ctx := context.Background()

	res, err := c.ResolveBatch(ctx, client.BatchRequest{Items: []client.ResolveRequest{
		{URL: "http://sho.rt/cached"}, {URL: "http://sho.rt/a"}, {URL: "https://example.org/x"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0].Resolution; r == nil || r.Status != client.StatusDone || !r.Cached || r.TargetURL != "https://example.com/dest/cached" {
		t.Errorf("cached item %+v", res[0])
	}
	if r := res[1].Resolution; r == nil || r.Status != client.StatusQueued || r.JobID == "" || r.PollURL == "" {
		t.Errorf("queued item %+v", res[1])
	}
	if e := res[2].Err; e == nil || e.Status != 422 || e.Code != "unsupported_link" || res[2].Resolution != nil {
		t.Errorf("refused item %+v", res[2])
	}

	jobs, err := c.Jobs(ctx, []string{res[1].Resolution.JobID, "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if jobs[0] == nil || jobs[0].Status != client.StatusDone || jobs[0].TargetURL != "https://example.com/dest/a" || jobs[1] != nil {
		t.Errorf("jobs %+v", jobs)
	}
}

// ResolveMany uses the batch endpoints when the server has them, sends rate-limited items
// again, and reports every link in input order.
func TestResolveManyBatches(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.limitItems = 2
	srv := f.serve()
	defer srv.Close()
	c := client.New(srv.URL, "sk_live_fake")
	urls := []string{"http://sho.rt/1", "http://sho.rt/cached", "http://sho.rt/2", "https://example.org/u", "http://sho.rt/gone"}
	out, err := c.ResolveMany(context.Background(), urls, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(out))
	for i, o := range out {
		switch {
		case o.Err != nil:
			got[i] = o.URL + " " + codeOf(o.Err)
		default:
			got[i] = o.URL + " " + o.Job.TargetURL
		}
	}
	want := []string{
		"http://sho.rt/1 https://example.com/dest/1",
		"http://sho.rt/cached https://example.com/dest/cached",
		"http://sho.rt/2 https://example.com/dest/2",
		"https://example.org/u unsupported_link",
		"http://sho.rt/gone link_removed",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("outcomes (-want +got):\n%s", d)
	}
	if n := f.count("POST /v1/resolve"); n != 0 {
		t.Errorf("%d single resolves; the batch endpoint exists", n)
	}
	if f.count("POST /v1/resolve/batch") != 2 || f.count("GET /v1/jobs?ids=") == 0 || f.count("GET /v1/jobs/{id}") != 0 {
		t.Errorf("calls %v", f.calls)
	}
	if d := cmp.Diff([]int{5, 3}, f.batchLen); d != "" {
		t.Errorf("batch sizes (the rate-limited items are sent again) (-want +got):\n%s", d)
	}
}

// A server without the batch endpoints (404) gets single calls, and the client remembers.
func TestResolveManyFallback(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.noBatch = true
	srv := f.serve()
	defer srv.Close()
	c := client.New(srv.URL, "sk_live_fake")
	for range 2 {
		out, err := c.ResolveMany(context.Background(), []string{"http://sho.rt/1", "http://sho.rt/2"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out[0].Job.TargetURL != "https://example.com/dest/1" || out[1].Job.TargetURL != "https://example.com/dest/2" {
			t.Errorf("outcomes %+v", out)
		}
	}
	if f.count("POST /v1/resolve/batch") != 1 || f.count("GET /v1/jobs?ids=") != 1 || f.count("POST /v1/resolve") != 4 {
		t.Errorf("calls %v", f.calls)
	}
}

// script answers requests in turn from a list of handlers (the last one repeats) and records
// when each request came.
type script struct {
	steps []http.HandlerFunc
	n     atomic.Int32
	at    []time.Time
	mu    chan struct{}
}

func newScript(steps ...http.HandlerFunc) *script {
	s := &script{steps: steps, mu: make(chan struct{}, 1)}
	s.mu <- struct{}{}
	return s
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	<-s.mu
	s.at = append(s.at, time.Now())
	s.mu <- struct{}{}
	i := int(s.n.Add(1)) - 1
	s.steps[min(i, len(s.steps)-1)](w, r)
}

func answer(status int, body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		if strings.Contains(body, `"code"`) {
			w.Header().Set("Content-Type", "application/problem+json")
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

const (
	queued  = `{"job_id":"j1","status":"queued","queue_position":0,"poll_url":"/v1/jobs/j1"}`
	doneJob = `{"job_id":"j1","status":"done","url":"http://sho.rt/a","target_url":"https://example.com/a","provider":"short","tier":"standard","error":null,"error_detail":null,"credits_charged":0,"balance":null,"created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z","completed_at":"2026-01-02T03:04:05.678Z","hops":[],"webhook":null}`
)

func TestResolveAndWaitHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	s := newScript(
		answer(429, `{"type":"x#rate_limited","title":"Rate limit exceeded","status":429,"code":"rate_limited","detail":"d","instance":"i","retry_after":2}`, "Retry-After", "2"),
		answer(202, queued),
		answer(200, doneJob),
	)
	srv := httptest.NewServer(s)
	defer srv.Close()
	job, err := client.New(srv.URL, "k").ResolveAndWait(context.Background(), "http://sho.rt/a")
	if err != nil || job.TargetURL != "https://example.com/a" {
		t.Fatalf("job %+v, err %v", job, err)
	}
	if d := s.at[1].Sub(s.at[0]); d < 2*time.Second {
		t.Errorf("retried %v after a Retry-After of 2 s", d)
	}
	if d := s.at[2].Sub(s.at[1]); d < client.MinPollInterval {
		t.Errorf("polled %v after the submission", d)
	}
}

func TestResolveAndWaitBacksOffOn5xx(t *testing.T) {
	t.Parallel()
	s := newScript(
		answer(202, queued),
		answer(503, `{"type":"x#service_unavailable","title":"Service unavailable","status":503,"code":"service_unavailable","detail":"d","instance":"i"}`),
		answer(502, `<html>bad gateway</html>`),
		answer(200, doneJob),
	)
	srv := httptest.NewServer(s)
	defer srv.Close()
	start := time.Now()
	job, err := client.New(srv.URL, "k").ResolveAndWait(context.Background(), "http://sho.rt/a")
	if err != nil || job.Status != client.StatusDone {
		t.Fatalf("job %+v, err %v", job, err)
	}
	// Backoff: between 0.5 and 1 s after the first 5xx, between 1 and 2 s after the second.
	if d1, d2 := s.at[2].Sub(s.at[1]), s.at[3].Sub(s.at[2]); d1 < 500*time.Millisecond || d2 < time.Second || d2 > 2500*time.Millisecond {
		t.Errorf("waits %v then %v", d1, d2)
	}
	if time.Since(start) > 6*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}

func TestNonProblemAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(answer(502, `<html>bad gateway</html>`, "X-Request-Id", "rid-1"))
	defer srv.Close()
	_, err := client.New(srv.URL, "k").Account(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 502 || e.Code != "" || e.Title != "Bad Gateway" || e.Instance != "rid-1" {
		t.Fatalf("err %#v", err)
	}
	if got := e.Error(); got != "linkhop: 502: Bad Gateway" {
		t.Errorf("Error() = %q", got)
	}
}

// A quota_exceeded 429 says "until midnight": ResolveAndWait returns it rather than sleep.
func TestQuotaExceededIsNotWaitedOut(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(answer(429,
		`{"type":"x#quota_exceeded","title":"Daily quota exceeded","status":429,"code":"quota_exceeded","detail":"d","instance":"i","retry_after":36000}`,
		"Retry-After", "36000"))
	defer srv.Close()
	_, err := client.New(srv.URL, "k").ResolveAndWait(context.Background(), "http://sho.rt/a")
	e := wantError(t, err, 429, "quota_exceeded")
	if e.RetryAfter != 10*time.Hour || e.Temporary() {
		t.Errorf("RetryAfter %v, Temporary %v", e.RetryAfter, e.Temporary())
	}
}

func codeOf(err error) string {
	var e *client.Error
	var je *client.JobError
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &je):
		return je.Code
	}
	return err.Error()
}
