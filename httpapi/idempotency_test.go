package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/keys"
)

// jobCount counts the job records and the queued resolve tasks in e's Redis: together they say
// whether a request created anything.
func (e *env) jobCount() (records, tasks int) {
	e.t.Helper()
	ctx := context.Background()
	ks, err := e.rdb.Keys(ctx, "*:job:*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := e.rdb.LLen(ctx, "asynq:{resolve}:pending").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ks), int(n)
}

// wantJobs fails unless exactly n jobs exist, each with its task.
func (e *env) wantJobs(n int) {
	e.t.Helper()
	if rec, tasks := e.jobCount(); rec != n || tasks != n {
		e.t.Fatalf("%d job records and %d queued tasks, want %d of each", rec, tasks, n)
	}
}

// wantReplay checks a replay answer: Idempotent-Replayed and the first job's id.
func wantReplay(t *testing.T, r resp, status int, jobID string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("replay: status %d, want %d: %s", r.status, status, r.raw)
	}
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay without Idempotent-Replayed: true (%q)", r.header.Get("Idempotent-Replayed"))
	}
	if r.body["job_id"] != jobID {
		t.Errorf("replay job_id %v, want the first job %s", r.body["job_id"], jobID)
	}
}

// accepted posts a resolve that must be accepted with 202 and returns the job id.
func (e *env) accepted(tok string, body any, hdr ...string) string {
	e.t.Helper()
	r := e.do("POST", "/v1/resolve", tok, body, hdr...)
	if r.status != http.StatusAccepted {
		e.t.Fatalf("want 202, got %d: %s", r.status, r.raw)
	}
	if r.header.Get("Idempotent-Replayed") != "" {
		e.t.Errorf("a first request is marked Idempotent-Replayed")
	}
	id, _ := r.body["job_id"].(string)
	return id
}

func TestIdempotencyReplaysWhileQueued(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		first  func(url string) (any, []string)
		replay func(url string) (any, []string)
	}{
		{
			"header",
			func(u string) (any, []string) {
				return map[string]any{"url": u}, []string{"Idempotency-Key", "order-42"}
			},
			func(u string) (any, []string) {
				return map[string]any{"url": u}, []string{"Idempotency-Key", "order-42"}
			},
		},
		{
			"body",
			func(u string) (any, []string) { return map[string]any{"url": u, "idempotency_key": "order-42"}, nil },
			func(u string) (any, []string) { return map[string]any{"url": u, "idempotency_key": "order-42"}, nil },
		},
		{
			// One key, whichever way it travels.
			"header then body",
			func(u string) (any, []string) {
				return map[string]any{"url": u}, []string{"Idempotency-Key", "order-42"}
			},
			func(u string) (any, []string) { return map[string]any{"url": u, "idempotency_key": "order-42"}, nil },
		},
		{
			// The body field wins: the first request used "b", so a header "b" replays it.
			"body wins over header",
			func(u string) (any, []string) {
				return map[string]any{"url": u, "idempotency_key": "b"}, []string{"Idempotency-Key", "a"}
			},
			func(u string) (any, []string) { return map[string]any{"url": u}, []string{"Idempotency-Key", "b"} },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			_, tok := e.key(keys.CreateParams{})
			body, hdr := tc.first("https://sho.rt/idem")
			id := e.accepted(tok, body, hdr...)
			for range 3 {
				body, hdr := tc.replay("https://sho.rt/idem")
				r := e.do("POST", "/v1/resolve", tok, body, hdr...)
				wantReplay(t, r, http.StatusAccepted, id)
				if r.body["status"] != "queued" || r.header.Get("Location") != "/v1/jobs/"+id || r.body["poll_url"] != "/v1/jobs/"+id {
					t.Errorf("replay 202: %v %s", r.header, r.raw)
				}
				if _, ok := r.body["queue_position"].(float64); !ok {
					t.Errorf("replay 202 without queue_position: %s", r.raw)
				}
			}
			e.wantJobs(1)
		})
	}
}

func TestIdempotencyBodyWinsHeaderUnused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	id := e.accepted(tok, map[string]any{"url": "https://sho.rt/w", "idempotency_key": "body"}, "Idempotency-Key", "header")
	// The header's key was never claimed: it starts a job of its own, even for another url.
	other := e.accepted(tok, map[string]any{"url": "https://sho.rt/other"}, "Idempotency-Key", "header")
	if other == id {
		t.Fatal("the header key was claimed although the body field won")
	}
	e.wantJobs(2)
}

func TestIdempotencyReplayWhenDone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{worker: true})
	// Unlimited per minute: waitJob polls often.
	_, tok := e.key(keys.CreateParams{Credits: ptr[int64](10), RateLimit: ptr(0)})
	id := e.accepted(tok, map[string]any{"url": "http://sho.rt/done"}, "Idempotency-Key", "k-done")
	job := e.waitJob(tok, id)
	if job["status"] != "done" {
		t.Fatalf("job %v", job)
	}
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/done"}, "Idempotency-Key", "k-done")
	wantReplay(t, r, http.StatusOK, id)
	want := map[string]any{
		"job_id": id, "status": "done", "url": "http://sho.rt/done", "target_url": "https://example.com/dest/done",
		"provider": "short", "tier": "standard", "credits_charged": 1.0, "cached": false, "balance": 9.0,
	}
	if d := cmp.Diff(want, r.body); d != "" {
		t.Errorf("replay of a done job (-want +got):\n%s", d)
	}
	// The replay charged nothing more.
	if acc := e.do("GET", "/v1/account", tok, nil); acc.body["balance"] != 9.0 {
		t.Errorf("balance after replay %v, want 9", acc.body["balance"])
	}
}

func TestIdempotencyConflict(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	const hook = "https://hooks.example.com/linkhop"
	id := e.accepted(tok, map[string]any{"url": "https://sho.rt/c", "webhook_url": hook, "idempotency_key": "k"})
	cases := []struct {
		name string
		body map[string]any
	}{
		{"different url", map[string]any{"url": "https://sho.rt/d", "webhook_url": hook, "idempotency_key": "k"}},
		{"different webhook_url", map[string]any{"url": "https://sho.rt/c", "webhook_url": hook + "/2", "idempotency_key": "k"}},
		{"webhook_url dropped", map[string]any{"url": "https://sho.rt/c", "idempotency_key": "k"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantProblem(t, e.do("POST", "/v1/resolve", tok, tc.body), http.StatusConflict, "idempotency_conflict")
		})
	}
	// The first request's claim is untouched by the conflicts.
	wantReplay(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/c", "webhook_url": hook, "idempotency_key": "k"}), 202, id)
	e.wantJobs(1)
}

func TestIdempotencyScopedToKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, a := e.key(keys.CreateParams{})
	_, b := e.key(keys.CreateParams{})
	ida := e.accepted(a, map[string]any{"url": "https://sho.rt/s"}, "Idempotency-Key", "shared")
	// Another API key's equal idempotency key is a different request: a new job, and another
	// url is no conflict.
	idb := e.accepted(b, map[string]any{"url": "https://sho.rt/t"}, "Idempotency-Key", "shared")
	if ida == idb {
		t.Fatal("two API keys share an idempotency key")
	}
	e.wantJobs(2)
}

func TestIdempotencyRememberedForRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{tweakCfg: func(c *config.Config) { c.JobRetention = 1500 * time.Millisecond }})
	_, tok := e.key(keys.CreateParams{})
	id := e.accepted(tok, map[string]any{"url": "https://sho.rt/r"}, "Idempotency-Key", "short-lived")
	wantReplay(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/r"}, "Idempotency-Key", "short-lived"), 202, id)
	// After JOB_RETENTION the key is forgotten with its job: the same key may start anew, even
	// for another url.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/r2"}, "Idempotency-Key", "short-lived")
		if r.status == http.StatusAccepted && r.header.Get("Idempotent-Replayed") == "" {
			if r.body["job_id"] == id {
				t.Fatal("a new request reused the expired job's id")
			}
			break
		}
		if r.status != http.StatusConflict || time.Now().After(deadline) {
			t.Fatalf("after retention: %d %s", r.status, r.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestIdempotencyReplayNotCountedAgainstQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{DailyQuota: ptr[int64](2)})
	id := e.accepted(tok, map[string]any{"url": "https://sho.rt/q1"}, "Idempotency-Key", "q")
	for range 3 {
		wantReplay(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/q1"}, "Idempotency-Key", "q"), 202, id)
	}
	// Conflicts are not accepted requests either.
	wantProblem(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/zz"}, "Idempotency-Key", "q"), 409, "idempotency_conflict")
	if acc := e.do("GET", "/v1/account", tok, nil); acc.body["daily_used"] != 1.0 {
		t.Errorf("daily_used %v after one request and its replays, want 1", acc.body["daily_used"])
	}
	// The last unit of the quota: taken by the second request.
	id2 := e.accepted(tok, map[string]any{"url": "https://sho.rt/q2"}, "Idempotency-Key", "q2")
	wantProblem(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/q3"}), 429, "quota_exceeded")
	// With the quota used up, a client retrying its accepted requests still gets their answers:
	// a replay is not a new request.
	wantReplay(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/q2"}, "Idempotency-Key", "q2"), 202, id2)
	wantReplay(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/q1"}, "Idempotency-Key", "q"), 202, id)
	// But an unknown idempotency key is a new request, refused by the quota, and it claims nothing.
	wantProblem(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/q4"}, "Idempotency-Key", "q4"), 429, "quota_exceeded")
	e.wantJobs(2)
	if acc := e.do("GET", "/v1/account", tok, nil); acc.body["daily_used"] != 2.0 {
		t.Errorf("daily_used %v, want 2", acc.body["daily_used"])
	}
}

func TestIdempotencyConcurrentOneJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{Credits: ptr[int64](100), DailyQuota: ptr[int64](50)})
	const n = 20
	res := make([]resp, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res[i] = e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/race", "idempotency_key": "race"})
		})
	}
	close(start)
	wg.Wait()
	ids := map[string]int{}
	replayed := 0
	for _, r := range res {
		if r.status != http.StatusAccepted {
			t.Fatalf("concurrent request: %d %s", r.status, r.raw)
		}
		ids[r.body["job_id"].(string)]++
		if r.header.Get("Idempotent-Replayed") == "true" {
			replayed++
		}
	}
	if len(ids) != 1 || replayed != n-1 {
		t.Fatalf("job ids %v, %d replayed; want one job and %d replays", ids, replayed, n-1)
	}
	e.wantJobs(1)
	acc := e.do("GET", "/v1/account", tok, nil)
	if acc.body["daily_used"] != 1.0 || acc.body["balance"] != 99.0 {
		t.Errorf("daily_used %v, balance %v; want 1 and 99 (one job held one credit)", acc.body["daily_used"], acc.body["balance"])
	}
	// Every replay points at a job that exists.
	for id := range ids {
		if r := e.do("GET", "/v1/jobs/"+id, tok, nil); r.status != 200 {
			t.Errorf("poll of the one job: %d", r.status)
		}
	}
}

func TestIdempotencyBadKeyCreatesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	for name, hdr := range map[string][]string{
		"header too long":  {"Idempotency-Key", strings.Repeat("x", 129)},
		"header not ascii": {"Idempotency-Key", "ключ"},
	} {
		t.Run(name, func(t *testing.T) {
			wantProblem(t, e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/bad"}, hdr...), 400, "invalid_request")
		})
	}
	e.wantJobs(0)
}
