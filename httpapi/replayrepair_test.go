package httpapi_test

import (
	"log/slog"
	"net/http"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkhop/linkhop/internal/app"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
)

// TestReplayRequeuesAnOrphanedJob: when Redis fails between a submit's create script and its
// enqueue, the undo fails too and leaves the record and its idempotency claim without a task
// (seen in the Redis-restart fault test). A client that retries with the same key must then
// get a job that runs. The orphan is made here by deleting the queued task by hand.
func TestReplayRequeuesAnOrphanedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, tok := e.key(keys.CreateParams{})
	body := map[string]any{"url": "http://sho.rt/orphan", "idempotency_key": "orphan-1"}
	id := e.accepted(tok, body)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	if err := insp.DeleteTask(jobs.QueueResolve, id); err != nil {
		t.Fatal(err)
	}

	r := e.do("POST", "/v1/resolve", tok, body)
	wantReplay(t, r, http.StatusAccepted, id)
	info, err := insp.GetTaskInfo(jobs.QueueResolve, id)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("the replayed job's task: %v %v, want pending", info, err)
	}
	// A second replay finds the task there and leaves it alone.
	wantReplay(t, e.do("POST", "/v1/resolve", tok, body), http.StatusAccepted, id)
	e.wantJobs(1)

	// And a worker completes it.
	w, err := app.NewWorker(e.cfg, e.rdb, slog.New(slog.DiscardHandler), e.svc, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	if job := e.waitJob(tok, id); job["status"] != "done" {
		t.Fatalf("job %v", job)
	}
}
