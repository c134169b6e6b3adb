//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/webhooks"
)

// recoveryBound is how soon after a worker's death its jobs and deliveries must end: the
// lease TTL (JOB_LEASE_TTL, 5 s by default), a beat of the reaper (1 s), and the work itself.
const recoveryBound = 10 * time.Second

// holdFirst makes the shortener hold the first request for path until the test ends and
// reports its arrival.
func holdFirst(t *testing.T, s *stack, path string) <-chan struct{} {
	arrived := make(chan struct{}, 1)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	s.short.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path || s.short.hitsOf(path) != 1 {
			return false
		}
		arrived <- struct{}{}
		<-hold
		return true
	})
	return arrived
}

func waitArrival(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s never arrived", what)
	}
}

// TestWorkerSIGSTOPPastLease: a worker is stopped (SIGSTOP) mid-resolve, holding the link's
// upstream lock, for longer than the lease TTL, while another worker runs. The other worker
// reaps the lapsed lease, takes over the lock and finishes the job. Then the stopped worker is
// resumed (SIGCONT): it finds its lease lost or its task replaced, must not finish the job a second time, and its
// task must end cleanly (no retry, no failure). The job ends done once, charged once, its
// webhook delivered once.
func TestWorkerSIGSTOPPastLease(t *testing.T) {
	s := newStack(t, nil, hookEnv()...)
	hook := newReceiver(t, nil)
	arrived := holdFirst(t, s, "/stop")
	api := s.startAPI()
	a := s.startWorker("worker-a")
	token, keyID := s.newKey("--rate-limit", "0", "--credits", "10")
	sub := call(context.Background(), api.addr, "POST", "/v1/resolve", token, map[string]string{"url": "http://bit.ly/stop", "webhook_url": hook.url("/hook")})
	if sub.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", sub.status, sub.raw)
	}
	id := sub.body["job_id"].(string)
	waitArrival(t, arrived, "worker-a's resolve")
	b := s.startWorker("worker-b")

	stoppedAt := time.Now()
	a.signal(syscall.SIGSTOP)
	recs := s.waitTerminal(keyID, []string{id}, 60*time.Second)
	took := time.Since(stoppedAt)
	if !recs[id].Status.Terminal() {
		a.signal(syscall.SIGCONT)
		t.Fatalf("job still %s %v after the stop", recs[id].Status, took.Round(time.Second))
	}
	t.Logf("worker-b finished the job %v after worker-a stopped", took.Round(100*time.Millisecond))
	if took > recoveryBound {
		t.Errorf("the job ended %v after the stop, want within %v", took.Round(100*time.Millisecond), recoveryBound)
	}
	time.Sleep(2 * time.Second) // stopped well past the lease
	a.signal(syscall.SIGCONT)
	resumedAt := time.Now()

	// worker-a notices at its next beat; its run ends and its task is deleted (not retried).
	deadline := resumedAt.Add(15 * time.Second)
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	for {
		_, err := insp.GetTaskInfo(jobs.QueueResolve, id)
		if errors.Is(err, asynq.ErrTaskNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker-a's task still there 15 s after SIGCONT: %s", s.taskState(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// worker-a drops its run: at its next beat (lease lost), or first when its resolve, timed
	// out during the stop, comes back and the owner check of the record refuses it. Its log may
	// reach this process a moment after its task is gone.
	for len(a.logs.lines("this run's outcome is dropped")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("worker-a did not drop its run")
		}
		time.Sleep(50 * time.Millisecond)
	}
	job := call(context.Background(), api.addr, "GET", "/v1/jobs/"+id, token, nil)
	if job.body["status"] != "done" || job.body["target_url"] != "https://example.com/dest/stop" ||
		job.body["credits_charged"] != 1.0 || job.body["balance"] != 9.0 {
		t.Fatalf("job after the resume: %s", job.raw)
	}
	st := (&hookStack{stack: s, token: token, keyID: keyID}).hookState(id, 30*time.Second).Webhook
	if got := hook.arrivals(); st.Status != "delivered" || st.Attempts != 1 || len(got) != 1 {
		t.Errorf("webhook %+v with %d arrivals, want delivered once", st, len(got))
	}
	if n := len(b.logs.lines("reaped a lapsed lease")) + len(a.logs.lines("reaped a lapsed lease")); n != 1 {
		t.Errorf("%d reaps, want 1", n)
	}
	if q, err := insp.GetQueueInfo(jobs.QueueResolve); err != nil || q.FailedTotal != 0 || q.Archived != 0 {
		t.Errorf("queue statistics: %+v %v; want no failure", q, err)
	}
}

// TestWorkerSIGKILLMidDelivery: a worker is killed while its webhook attempt waits on the
// receiver, with the per-URL cap of attempts in flight at 1 (WEBHOOK_RATE_PER_SECOND=1) and a
// 30 s attempt timeout, so the dead attempt's in-flight lease would hold the only slot for half
// a minute. Another worker must deliver within recoveryBound of the kill: the reaper gives the
// slot back and queues the delivery again. The receiver sees the killed attempt and the
// delivery, with one webhook-id; the job's webhook shows delivered after 1 attempt.
func TestWorkerSIGKILLMidDelivery(t *testing.T) {
	s := newStack(t, nil, append(hookEnv(), "WEBHOOK_RATE_PER_SECOND=1", "WEBHOOK_TIMEOUT=30s")...)
	arrived := make(chan struct{}, 1)
	hold := make(chan struct{})
	hook := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			arrived <- struct{}{}
			<-hold // never answered: its worker dies meanwhile
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	t.Cleanup(func() { close(hold) })
	api := s.startAPI()
	a := s.startWorker("worker-a")
	token, keyID := s.newKey("--rate-limit", "0")
	sub := call(context.Background(), api.addr, "POST", "/v1/resolve", token, map[string]string{"url": "http://bit.ly/hookkill", "webhook_url": hook.url("/hook")})
	if sub.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", sub.status, sub.raw)
	}
	id := sub.body["job_id"].(string)
	waitArrival(t, arrived, "worker-a's delivery attempt")
	killedAt := time.Now()
	a.signal(syscall.SIGKILL)
	if code := a.wait(5 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("worker-a did not die of SIGKILL (exit %d)", code)
	}
	time.Sleep(2 * time.Second)
	s.startWorker("worker-b")

	hs := &hookStack{stack: s, token: token, keyID: keyID}
	rec := hs.hookState(id, 150*time.Second)
	took := time.Since(killedAt)
	t.Logf("worker-b delivered the webhook %v after the SIGKILL", took.Round(100*time.Millisecond))
	if took > recoveryBound {
		t.Errorf("delivered %v after the kill, want within %v", took.Round(100*time.Millisecond), recoveryBound)
	}
	got := hook.arrivals()
	if rec.Status != jobs.StatusDone || rec.Webhook.Status != "delivered" || rec.Webhook.Attempts != 1 || len(got) != 2 {
		t.Fatalf("job %s, webhook %+v, %d arrivals; want done, delivered after 1 attempt, 2 arrivals (the killed one and the delivery)",
			rec.Status, rec.Webhook, len(got))
	}
	sameID(t, got)
	if got[1].at.Sub(got[0].at) < time.Second {
		t.Errorf("the attempts came %v apart: the per-URL rate of 1 per second was not kept", got[1].at.Sub(got[0].at))
	}
}

// TestWorkerSIGKILLHoldingUpstreamLock: two jobs for one link. Worker A (one slot) resolves
// the first, holding the link's upstream lock; worker B runs the second, which waits on that
// lock. A is killed. B's waiting job must take the lock over as soon as A's process is known
// dead (not after the lock's TTL, RESOLVE_TIMEOUT + 15 s), and the first job is reaped and
// finished too: both end done once within recoveryBound of the kill, and the provider sees one
// more request only (the killed one and the takeover's).
func TestWorkerSIGKILLHoldingUpstreamLock(t *testing.T) {
	s := newStack(t, nil, "RESOLVE_TIMEOUT=20s")
	arrived := holdFirst(t, s, "/locked")
	api := s.startAPI()
	a := s.startWorker("worker-a", "WORKER_CONCURRENCY=1")
	token, keyID := s.newKey("--rate-limit", "0", "--credits", "10")
	submit := func(idem string) string {
		sub := call(context.Background(), api.addr, "POST", "/v1/resolve", token,
			map[string]string{"url": "http://bit.ly/locked", "idempotency_key": idem})
		if sub.status != http.StatusAccepted {
			t.Fatalf("submit: %d %s", sub.status, sub.raw)
		}
		return sub.body["job_id"].(string)
	}
	first := submit("first")
	waitArrival(t, arrived, "worker-a's resolve")
	s.startWorker("worker-b")
	second := submit("second")
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, _ := s.store.Get(context.Background(), keyID, second)
		if r.Status == jobs.StatusRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker-b did not start the second job (%s)", r.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the second job is waiting on worker-a's lock

	killedAt := time.Now()
	a.signal(syscall.SIGKILL)
	recs := s.waitTerminal(keyID, []string{first, second}, 60*time.Second)
	took := time.Since(killedAt)
	for _, id := range []string{first, second} {
		r := recs[id]
		if r.Status != jobs.StatusDone || r.TargetURL == nil || *r.TargetURL != "https://example.com/dest/locked" || r.CreditsCharged != 1 {
			t.Fatalf("job %s: %s %v charged %d", id, r.Status, r.TargetURL, r.CreditsCharged)
		}
	}
	t.Logf("both jobs done %v after the SIGKILL", took.Round(100*time.Millisecond))
	if took > recoveryBound {
		t.Errorf("the jobs ended %v after the kill, want within %v", took.Round(100*time.Millisecond), recoveryBound)
	}
	if n := s.short.hitsOf("/locked"); n != 2 {
		t.Errorf("the provider saw %d requests, want 2 (the killed one and the takeover's)", n)
	}
	if bal := call(context.Background(), api.addr, "GET", "/v1/account", token, nil).body["balance"]; bal != 8.0 {
		t.Errorf("balance %v, want 8 (each job charged once)", bal)
	}
}

// TestWorkerSIGKILLWithWebhooksWaiting: webhook attempts held back by the per-URL rate wait for
// their places in the worker that held them back, their tasks completed and their job leases
// parked until one JOB_LEASE_TTL after each place (docs/webhooks.md#rate-per-webhook-url).
// Worker A is killed while such attempts wait in it, after its leases have beaten. Worker B
// delivers each of them once, within recoveryBound of the last place, with the per-URL rate
// kept.
func TestWorkerSIGKILLWithWebhooksWaiting(t *testing.T) {
	env := append(hookEnv(), "WEBHOOK_RATE_PER_SECOND=1")
	h := &hookStack{stack: newStack(t, nil, env...)}
	h.api = h.startAPI()
	h.token, h.keyID = h.newKey("--rate-limit", "0")
	hook := newReceiver(t, nil)
	a := h.startWorker("worker-a")
	var ids []string
	for i := range 5 {
		ids = append(ids, h.submit(fmt.Sprintf("roomkill-%d", i), hook.url("/room")))
	}
	// Waiting in A: held back with a place (next_attempt_at set), and no task left in asynq.
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	waiting := func() (n int, last time.Time) {
		for _, id := range ids {
			r, err := h.store.Get(context.Background(), h.keyID, id)
			if err != nil || r.Webhook == nil || r.Webhook.Status != webhooks.StatusPending || r.Webhook.NextAttemptAt == nil {
				continue
			}
			if _, err := insp.GetTaskInfo(jobs.QueueWebhooks, "webhook:"+id+":1"); !errors.Is(err, asynq.ErrTaskNotFound) {
				continue
			}
			n++
			if r.Webhook.NextAttemptAt.After(last) {
				last = *r.Webhook.NextAttemptAt
			}
		}
		return n, last
	}
	deadline := time.Now().Add(30 * time.Second)
	n, last := waiting()
	for n < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts waiting in worker-a, want 4 (%d arrivals)", n, len(hook.arrivals()))
		}
		time.Sleep(20 * time.Millisecond)
		n, last = waiting()
	}
	// A beat or two of A's leases first (every second): a waiting attempt's lease must stay
	// in the index while its process lives, not only until the next beat.
	time.Sleep(1500 * time.Millisecond)
	if n, last = waiting(); n < 2 {
		t.Fatalf("%d attempts still waiting in worker-a 1.5 s later, want at least 2", n)
	}
	killedAt := time.Now()
	a.signal(syscall.SIGKILL)
	if code := a.wait(5 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("worker-a did not die of SIGKILL (exit %d)", code)
	}
	h.startWorker("worker-b")

	for _, id := range ids {
		r := h.hookState(id, time.Until(last.Add(recoveryBound)))
		if r.Webhook.Status != webhooks.StatusDelivered || r.Webhook.Attempts != 1 {
			t.Errorf("job %s: webhook %+v, want delivered at the first attempt", id, r.Webhook)
		}
	}
	got := hook.arrivals()
	seen := map[string]int{}
	for i, g := range got {
		seen[g.jobID]++
		if i > 0 && g.at.Sub(got[i-1].at) < time.Second {
			t.Errorf("arrivals %d and %d came %v apart: the per-URL rate of 1 per second was not kept", i-1, i, g.at.Sub(got[i-1].at))
		}
	}
	if len(got) != len(ids) || len(seen) != len(ids) {
		t.Errorf("%d arrivals for %d jobs (%v), want one each", len(got), len(ids), seen)
	}
	if len(got) > 0 {
		t.Logf("the last waiting attempt's place was %v after the kill; the last delivery came %v after that place",
			last.Sub(killedAt).Round(100*time.Millisecond), got[len(got)-1].at.Sub(last).Round(100*time.Millisecond))
	}
}
