//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/webhooks"
)

// readiness polls GET /readyz of addr every 100 ms and remembers every answer with its time.
type readiness struct {
	mu   sync.Mutex
	seen []struct {
		at     time.Time
		status int
	}
}

func watchReady(ctx context.Context, addr string) *readiness {
	r := &readiness{}
	go func() {
		for ctx.Err() == nil {
			code, _ := get(addr, "/readyz")
			r.mu.Lock()
			r.seen = append(r.seen, struct {
				at     time.Time
				status int
			}{time.Now(), code})
			r.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return r
}

// saw reports whether status was answered between from and to.
func (r *readiness) saw(status int, from, to time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.seen {
		if s.status == status && !s.at.Before(from) && !s.at.After(to) {
			return true
		}
	}
	return false
}

// TestRedisRestartUnderLoad: Redis (AOF, fsync always) is killed and restarted on the same
// port while clients submit and poll. During the outage the API answers 503
// service_unavailable with Retry-After (never another 5xx, never no answer) and both /readyz
// go 503; afterwards both go 200 again and requests succeed without restarting either
// process; every job accepted before, during or after the outage completes; and a client
// that retries a refused request with the same idempotency key gets a job that completes.
func TestRedisRestartUnderLoad(t *testing.T) {
	// Long enough that requests sent during it run out of go-redis's own retries (about
	// 2–3 s of dialling and backing off) and must be answered with 503.
	const down = 6 * time.Second
	s := newStack(t, []string{"--appendonly", "yes", "--appendfsync", "always"}, hookEnv()...)
	hook := newReceiver(t, nil)
	api := s.startAPI()
	w := s.startWorker("worker")
	token, keyID := s.newKey("--rate-limit", "0")

	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	apiReady, workerReady := watchReady(watchCtx, api.addr), watchReady(watchCtx, w.addr)

	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	wait := resolveLoad(loadCtx, func() string { return api.addr }, token, "load", hook.url("/hook"), 4)
	time.Sleep(2 * time.Second)

	outageStart := time.Now()
	if err := s.redis.Restart(down); err != nil {
		t.Fatalf("restarting Redis: %v", err)
	}
	outageEnd := time.Now()
	t.Logf("Redis was down for %v", outageEnd.Sub(outageStart).Round(time.Millisecond))

	// Recovery without a restart: both probes answer 200 again, and so do resolves.
	deadline := time.Now().Add(20 * time.Second)
	for !apiReady.saw(200, outageEnd, time.Now()) || !workerReady.saw(200, outageEnd, time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not recover within 20s of Redis coming back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	recovered := time.Now()
	t.Logf("both /readyz answered 200 again %v after Redis came back", recovered.Sub(outageEnd).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	stopLoad()
	results := wait()
	stopWatch()

	if !api.running() || !w.running() {
		t.Fatal("a process exited during the outage")
	}
	for name, r := range map[string]*readiness{"api": apiReady, "worker": workerReady} {
		if !r.saw(503, outageStart, outageEnd) {
			t.Errorf("%s /readyz never answered 503 during the outage", name)
		}
	}

	var (
		accepted                        []string // job ids of every 202
		refusedIdem                     []string // idempotency keys answered 503
		before, during, after, answered int
		inOutage                        int // 503s sent and answered while Redis was down
		slowest                         time.Duration
	)
	for _, r := range results {
		a := r.a
		if a.err != nil {
			t.Errorf("%s: no answer: %v", r.idem, a.err)
			continue
		}
		answered++
		slowest = max(slowest, r.at.Sub(r.start))
		switch {
		case a.status == http.StatusServiceUnavailable:
			if r.start.After(outageStart) && r.at.Before(outageEnd) {
				inOutage++
			}
			if !isProblem(a, "service_unavailable") || a.header.Get("Retry-After") == "" {
				t.Errorf("%s: 503 without a complete service_unavailable problem and Retry-After: %v %s", r.idem, a.header, a.raw)
			}
			if r.idem != "poll" {
				refusedIdem = append(refusedIdem, r.idem)
			}
		case a.status >= 500:
			t.Errorf("%s: %d %s", r.idem, a.status, a.raw)
		case a.status == http.StatusAccepted:
			accepted = append(accepted, a.body["job_id"].(string))
			switch {
			case r.at.Before(outageStart):
				before++
			case r.at.Before(recovered):
				during++
			default:
				after++
			}
		}
	}
	t.Logf("%d answers; accepted %d before, %d during, %d after the outage; %d resolves refused with 503; %d 503s (resolves and polls) sent and answered while Redis was down; slowest answer %v",
		answered, before, during, after, len(refusedIdem), inOutage, slowest.Round(time.Millisecond))
	if inOutage == 0 {
		t.Error("no request sent during the outage was answered 503 during it")
	}
	if slowest > 10*time.Second {
		t.Errorf("an answer took %v: requests hang while Redis is down", slowest)
	}
	if before == 0 || after == 0 || len(refusedIdem) == 0 {
		t.Fatalf("the load did not cover the outage (before %d, after %d, 503s %d)", before, after, len(refusedIdem))
	}

	// Clients retry what was refused, with the same idempotency key and body.
	for _, idem := range refusedIdem {
		body := map[string]string{"url": "http://bit.ly/" + idem, "idempotency_key": idem}
		var n int
		if _, err := fmt.Sscanf(idem, "load-%d", &n); err == nil && n%3 == 0 {
			body["webhook_url"] = hook.url("/hook")
		}
		a := call(context.Background(), api.addr, "POST", "/v1/resolve", token, body)
		id, _ := a.body["job_id"].(string)
		if (a.status != http.StatusAccepted && a.status != http.StatusOK) || id == "" {
			t.Errorf("retry of %s: %d %s", idem, a.status, a.raw)
			continue
		}
		accepted = append(accepted, id)
	}

	// A task that a worker had taken from the queue when Redis died comes back only when its
	// lease has expired (asynq: 30 s lease, plus 30 s the recoverer allows for clock skew, found
	// by a recoverer that runs every minute): up to about two minutes.
	recs := s.waitTerminal(keyID, accepted, 150*time.Second)
	lost := 0
	for _, id := range accepted {
		if r, ok := recs[id]; !ok || r.Status != jobs.StatusDone {
			lost++
			t.Errorf("job %s accepted but not done: %q (created %v, updated %v); task: %s", id, r.Status,
				r.CreatedAt.Format("15:04:05.000"), r.UpdatedAt.Format("15:04:05.000"), s.taskState(id))
		}
	}
	// Nothing else was left behind: no job stuck, no claim naming a job that does not exist.
	all := s.jobIDs(keyID)
	recs = s.waitTerminal(keyID, all, 10*time.Second)
	for _, id := range all {
		if !recs[id].Status.Terminal() {
			t.Errorf("job %s left %s", id, recs[id].Status)
		}
	}
	for _, id := range s.claims(keyID) {
		if _, ok := recs[id]; !ok {
			t.Errorf("an idempotency claim names job %s, which does not exist", id)
		}
	}
	t.Logf("%d accepted jobs, %d not done", len(accepted), lost)

	// Every job that asked for a webhook has it delivered (or visibly failed: the receiver
	// here never fails, so delivered), and each event arrived at least once.
	h := &hookStack{stack: s, token: token, keyID: keyID}
	arrived := map[string]bool{}
	hooks := 0
	for _, id := range accepted {
		if recs[id].WebhookURL != "" {
			hooks++
		}
	}
	// All of them go to one URL at WEBHOOK_RATE_PER_SECOND (hookRate), in the order of their
	// places in line, not of the jobs: the last can come hooks/hookRate seconds after the
	// first, and that can be any job's. The wait allows for the whole line, and a margin.
	hooksBy := time.Now().Add(150*time.Second + time.Duration(hooks)*time.Second/hookRate)
	for _, id := range accepted {
		if recs[id].WebhookURL == "" {
			continue
		}
		st := h.hookState(id, time.Until(hooksBy)).Webhook
		if st.Status != webhooks.StatusDelivered {
			t.Errorf("job %s webhook %+v", id, st)
		}
	}
	for _, a := range hook.arrivals() {
		arrived[a.jobID] = true
	}
	for _, id := range accepted {
		if recs[id].WebhookURL != "" && !arrived[id] {
			t.Errorf("job %s: webhook delivered per the record, but the receiver never saw it", id)
		}
	}
	t.Logf("%d webhooks, all delivered; %d arrivals at the receiver", hooks, len(hook.arrivals()))
}
