//go:build faults

package faults

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/jobs"
)

// TestWorkerSIGKILLMidResolve: a worker is killed with SIGKILL while its resolve is waiting on
// the provider, holding the link's upstream lock. Nothing tells Redis. Another worker must
// finish the job within recoveryBound of the kill (docs/reliability.md#recovery-times-and-why):
// the job's lease lapses JOB_LEASE_TTL (5 s) after the last renewal, a reaper queues the job
// again under a replacement task, and the replacement takes over the dead worker's upstream
// lock at once. The job must end done exactly once: the right target, charged once, its hops
// recorded, and its webhook delivered once. Then asynq's own recoverer hands the original task
// back (55–120 s after the kill: asynq v0.26's constants), and it must end cleanly: deleted, not
// archived, no failure counted.
func TestWorkerSIGKILLMidResolve(t *testing.T) {
	s := newStack(t, nil, hookEnv()...)
	hook := newReceiver(t, nil)
	arrived := make(chan struct{}, 1)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) }) // before the shortener closes (cleanups run last-in first-out)
	s.short.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/kill" || s.short.hitsOf("/kill") != 1 {
			return false
		}
		arrived <- struct{}{}
		<-hold // the first attempt never gets an answer: its worker dies meanwhile
		return true
	})
	api := s.startAPI()
	a := s.startWorker("worker-a")
	token, keyID := s.newKey("--rate-limit", "0", "--credits", "10")
	sub := call(context.Background(), api.addr, "POST", "/v1/resolve", token, map[string]string{"url": "http://bit.ly/kill", "webhook_url": hook.url("/hook")})
	if sub.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", sub.status, sub.raw)
	}
	id := sub.body["job_id"].(string)
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("worker-a did not start the resolve")
	}
	// A resolve still going after 100 ms shows its job running (docs/api.md#get-v1jobsjob_id).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r, _ := s.store.Get(context.Background(), keyID, id); r.Status == jobs.StatusRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job did not show running while worker-a resolved it")
		}
	}

	killedAt := time.Now()
	a.signal(syscall.SIGKILL)
	if code := a.wait(5 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("worker-a did not die of SIGKILL (exit %d)", code)
	}
	if r, _ := s.store.Get(context.Background(), keyID, id); r.Status != jobs.StatusRunning {
		t.Fatalf("job is %s after the kill, want running", r.Status)
	}
	time.Sleep(2 * time.Second)
	b := s.startWorker("worker-b")

	recs := s.waitTerminal(keyID, []string{id}, 150*time.Second)
	took := time.Since(killedAt)
	rec := recs[id]
	if !rec.Status.Terminal() {
		t.Fatalf("job still %s %v after the kill; task: %s", rec.Status, took.Round(time.Second), s.taskState(id))
	}
	t.Logf("another worker finished the job %v after the SIGKILL", took.Round(100*time.Millisecond))
	if took > recoveryBound {
		t.Errorf("the job ended %v after the kill, want within %v", took.Round(100*time.Millisecond), recoveryBound)
	}

	job := call(context.Background(), api.addr, "GET", "/v1/jobs/"+id, token, nil)
	if job.status != http.StatusOK || job.body["status"] != "done" || job.body["target_url"] != "https://example.com/dest/kill" {
		t.Fatalf("job after recovery: %d %s", job.status, job.raw)
	}
	if job.body["credits_charged"] != 1.0 || job.body["balance"] != 9.0 {
		t.Errorf("charged %v, balance %v; want 1 and 9 (charged once)", job.body["credits_charged"], job.body["balance"])
	}
	if hops, _ := job.body["hops"].([]any); len(hops) != 2 {
		t.Errorf("hops %v", job.body["hops"])
	}
	if n := s.short.hitsOf("/kill"); n != 2 {
		t.Errorf("the provider saw %d requests, want 2 (the killed attempt and the recovered one)", n)
	}
	if len(b.logs.lines("reaped a lapsed lease")) != 1 {
		t.Errorf("worker-b reaped %d leases, want 1", len(b.logs.lines("reaped a lapsed lease")))
	}
	// Its webhook ends delivered, once (the killed worker never reached the terminal state).
	st := (&hookStack{stack: s, token: token, keyID: keyID}).hookState(id, 30*time.Second).Webhook
	if got := hook.arrivals(); st.Status != "delivered" || st.Attempts != 1 || len(got) != 1 || got[0].jobID != id || !got[0].sig {
		t.Errorf("webhook %+v with %d arrivals, want delivered once", st, len(got))
	}
	originalEndsCleanly(t, s, id, killedAt)
}

// originalEndsCleanly waits for asynq's recoverer to hand back the original task of job id
// (its dead worker's lease, asynq's own, runs out 55–120 s after the kill) and checks that it
// ended without a trace: deleted, never archived, no failure counted in the queue's statistics.
func originalEndsCleanly(t *testing.T, s *stack, id string, killedAt time.Time) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	deadline := killedAt.Add(150 * time.Second)
	for {
		info, err := insp.GetTaskInfo(jobs.QueueResolve, id)
		if err != nil {
			break // deleted: it ran and found nothing to do
		}
		if info.State == asynq.TaskStateArchived {
			t.Fatalf("the original task was archived: %s", info.LastErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the original task is still %v %v after the kill", info.State, time.Since(killedAt).Round(time.Second))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("asynq handed the original task back and it ended %v after the kill", time.Since(killedAt).Round(time.Second))
	q, err := insp.GetQueueInfo(jobs.QueueResolve)
	if err != nil {
		t.Fatal(err)
	}
	if q.FailedTotal != 0 || q.Archived != 0 || q.Retry != 0 {
		t.Errorf("queue statistics after the recovery: %d failed, %d archived, %d in retry; want none", q.FailedTotal, q.Archived, q.Retry)
	}
}
