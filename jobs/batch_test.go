package jobs_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
)

// The batch path writes asynq's task layout itself (one round trip for many tasks); asynq must
// read its tasks exactly as it reads those its Client enqueued for single submits.
func TestEnqueueManyMatchesAsynq(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	ctx := context.Background()
	store := jobs.NewStore(rdb, time.Hour)
	opts := jobs.TaskOptions{MaxAttempts: 4, Timeout: 7 * time.Second}
	q := jobs.NewQueue(rdb, store, opts)
	single := &jobs.Record{ID: uuid.NewString(), KeyID: "key_b", URL: "https://sho.rt/1", Provider: "short", Tier: "standard"}
	if _, err := q.Submit(ctx, single, 0); err != nil {
		t.Fatal(err)
	}
	batched := &jobs.Record{ID: uuid.NewString(), URL: "https://sho.rt/2", Provider: "short", Tier: "standard"}
	res, err := q.SubmitBatch(ctx, "key_b", []jobs.BatchItem{{Kind: jobs.BatchNew, Record: batched}})
	if err != nil || res.Items[0].Code != jobs.BatchCreated {
		t.Fatalf("%+v %v", res, err)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	want, err := insp.GetTaskInfo(jobs.QueueResolve, single.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := insp.GetTaskInfo(jobs.QueueResolve, batched.ID)
	if err != nil {
		t.Fatal(err)
	}
	var p jobs.ResolvePayload
	if err := json.Unmarshal(got.Payload, &p); err != nil || !cmp.Equal(p, jobs.ResolvePayload{JobID: batched.ID, KeyID: "key_b", URL: "https://sho.rt/2"}) {
		t.Fatalf("payload %s: %v", got.Payload, err)
	}
	ignore := cmpopts.IgnoreFields(asynq.TaskInfo{}, "ID", "Payload", "NextProcessAt")
	if d := cmp.Diff(want, got, ignore); d != "" {
		t.Errorf("batch task differs from asynq's own (-asynq +batch):\n%s", d)
	}
	if got.State != asynq.TaskStatePending || got.MaxRetry != 14 || got.Timeout != 17*time.Second {
		t.Errorf("task %+v", got)
	}
	qs, err := insp.Queues()
	if err != nil || len(qs) != 1 || qs[0] != jobs.QueueResolve {
		t.Errorf("queues %v %v", qs, err)
	}
	// An asynq server takes both tasks.
	seen := make(chan string, 2)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 2, Queues: map[string]int{jobs.QueueResolve: 1}, LogLevel: asynq.FatalLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc(jobs.TypeResolve, func(_ context.Context, t *asynq.Task) error {
		var p jobs.ResolvePayload
		_ = json.Unmarshal(t.Payload(), &p)
		seen <- p.JobID
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ran := map[string]bool{}
	for range 2 {
		select {
		case id := <-seen:
			ran[id] = true
		case <-time.After(15 * time.Second):
			t.Fatal("the tasks did not run")
		}
	}
	if !ran[single.ID] || !ran[batched.ID] {
		t.Errorf("ran %v", ran)
	}
}

// Items are taken in order in one step: a claim made by an item replays for a later item with
// the same idempotency key, and each job is enqueued once.
func TestSubmitBatchReplaysWithinBatch(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	ctx := context.Background()
	q := jobs.NewQueue(rdb, jobs.NewStore(rdb, time.Hour), jobs.TaskOptions{MaxAttempts: 1, Timeout: time.Second})
	first := &jobs.Record{ID: uuid.NewString(), URL: "https://sho.rt/a", IdempotencyKey: "k"}
	again := &jobs.Record{ID: uuid.NewString(), URL: "https://sho.rt/a", IdempotencyKey: "k"}
	other := &jobs.Record{ID: uuid.NewString(), URL: "https://sho.rt/b"}
	res, err := q.SubmitBatch(ctx, "key_r", []jobs.BatchItem{
		{Kind: jobs.BatchNew, Record: first}, {Kind: jobs.BatchNew, Record: again}, {Kind: jobs.BatchNew, Record: other},
	})
	if err != nil {
		t.Fatal(err)
	}
	codes := []jobs.BatchCode{res.Items[0].Code, res.Items[1].Code, res.Items[2].Code}
	if d := cmp.Diff([]jobs.BatchCode{jobs.BatchCreated, jobs.BatchReplay, jobs.BatchCreated}, codes); d != "" {
		t.Fatal(d)
	}
	if r := res.Items[1]; r.Replay.JobID != first.ID || r.Replayed == nil || r.Replayed.ID != first.ID || r.Replayed.Status != jobs.StatusQueued {
		t.Errorf("replay %+v", r)
	}
	if res.Counted != 2 || res.DayUsed != 2 {
		t.Errorf("counted %d, day used %d; want 2", res.Counted, res.DayUsed)
	}
	if n, _ := rdb.LLen(ctx, "asynq:{resolve}:pending").Result(); n != 2 {
		t.Errorf("%d pending tasks, want 2", n)
	}
	if _, err := jobs.NewStore(rdb, time.Hour).Get(ctx, "key_r", again.ID); err == nil {
		t.Error("the replayed item created a job")
	}
}
