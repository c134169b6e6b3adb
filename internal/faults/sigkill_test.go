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
// the provider. Nothing tells Redis; the task stays "active" under the dead worker's lease.
// Another worker must finish the job once asynq's recoverer finds the lease expired, and the
// job must end done exactly once: the right target, charged once, its hops recorded, and its
// webhook delivered once.
//
// How long that takes is asynq v0.26's arithmetic (internal/rdb.LeaseDuration, recoverer.go):
// the lease is 30 s and is extended every 5 s by the heartbeater; the recoverer takes tasks
// whose lease expired at least 30 s ago (its allowance for clock skew) and runs at a worker's
// start and then every minute. So a task is recoverable 55–60 s after the kill and is
// recovered at the next recoverer run: 55–120 s in all. The second worker starts 2 s after
// the kill here, so its first periodic run comes at about 62 s; the bound allows for the
// unlucky phase too.
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

	killedAt := time.Now()
	a.signal(syscall.SIGKILL)
	if code := a.wait(5 * time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("worker-a did not die of SIGKILL (exit %d)", code)
	}
	if r, _ := s.store.Get(context.Background(), keyID, id); r.Status != jobs.StatusRunning {
		t.Fatalf("job is %s after the kill, want running", r.Status)
	}
	time.Sleep(2 * time.Second)
	s.startWorker("worker-b")

	recs := s.waitTerminal(keyID, []string{id}, 150*time.Second)
	took := time.Since(killedAt)
	rec := recs[id]
	if !rec.Status.Terminal() {
		t.Fatalf("job still %s %v after the kill; task: %s", rec.Status, took.Round(time.Second), s.taskState(id))
	}
	t.Logf("another worker finished the job %v after the SIGKILL", took.Round(100*time.Millisecond))

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
	// Its webhook ends delivered, once (the killed worker never reached the terminal state).
	st := (&hookStack{stack: s, token: token, keyID: keyID}).hookState(id, 30*time.Second).Webhook
	if got := hook.arrivals(); st.Status != "delivered" || st.Attempts != 1 || len(got) != 1 || got[0].jobID != id || !got[0].sig {
		t.Errorf("webhook %+v with %d arrivals, want delivered once", st, len(got))
	}
	// The task is gone (asynq deletes a task without retention when it succeeds).
	if _, err := asynq.NewInspectorFromRedisClient(s.rdb).GetTaskInfo(jobs.QueueResolve, id); err == nil {
		t.Errorf("the task still exists: %s", s.taskState(id))
	}
}
