package jobs_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
)

// doneCounter counts the tasks of one queue whose asynq completion (its Done script: the
// queue's active list, lease set, the task, the processed counters, then the task id and two
// numbers) reached Redis.
type doneCounter struct {
	queue string
	tasks sync.Map
}

func (c *doneCounter) count() int {
	n := 0
	c.tasks.Range(func(any, any) bool { n++; return true })
	return n
}

func (*doneCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*doneCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *doneCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		q := "asynq:{" + c.queue + "}:"
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && len(a) == 11 && a[3] == q+"active" && a[4] == q+"lease" {
			c.tasks.Store(a[8], true) // once per task: a script Redis does not know yet is sent again
		}
		return next(ctx, cmd)
	}
}

// submitTestJobs submits plain jobs of keyID without a webhook, then hooked jobs with one (to
// a closed port), all queued, and returns their ids in that order.
func submitTestJobs(t *testing.T, q *jobs.Queue, keyID string, plain, hooked int) []string {
	t.Helper()
	var ids []string
	for i := range plain + hooked {
		now := time.Now().UTC().Truncate(time.Millisecond)
		r := jobs.Record{ID: uuid.NewString(), KeyID: keyID, URL: "https://sho.rt/" + strconv.Itoa(i),
			CreatedAt: now, UpdatedAt: now, Hops: []resolve.Hop{}}
		if i >= plain {
			r.WebhookURL = "http://127.0.0.1:9/hook"
		}
		if _, err := q.Submit(context.Background(), &r, 0); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// processed is asynq's count of the resolve queue's completed tasks.
func processed(rdb redis.UniversalClient) int64 {
	n, _ := rdb.Get(context.Background(), "asynq:{resolve}:processed").Int64()
	return n
}

// TestWorkerCompletesInLastWrite: on a single Redis, the last write of a job without a webhook
// completes its asynq task, and asynq's own completion of it never reaches Redis; a job with
// a webhook (whose enqueue follows the write and may fail) is completed by asynq. On a Cluster
// node (the record's slot is not the task's: CROSSSLOT) every task is completed by asynq.
// Either way each task is completed once: gone from the queue, its lease and its hash, and
// counted once in asynq's processed counters, as asynq's own completion leaves them.
func TestWorkerCompletesInLastWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cluster bool
	}{{"single Redis", false}, {"Cluster node", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var srv *redistest.Server
			if tc.cluster {
				srv = redistest.StartClusterNode(t)
			} else {
				srv = redistest.Start(t)
			}
			rdb := srv.Client(t)
			ctx := context.Background()
			w := jobs.NewWorker(rdb, jobs.WorkerOptions{Concurrency: 4, ShutdownTimeout: time.Second})
			dones := &doneCounter{queue: jobs.QueueResolve}
			rdb.AddHook(dones) // after the worker's hooks: it sees what they let through
			store := jobs.NewStore(rdb, time.Hour)
			var terminals atomic.Int64
			h := &jobs.ResolveHandler{Store: store, Resolver: &stubResolver{target: "https://dest.example/"},
				Logger: slog.New(slog.DiscardHandler), MaxAttempts: 1, Leases: w.Leases(), Complete: w.Completions(),
				OnTerminal: func(context.Context, jobs.Record) error { terminals.Add(1); return nil }}
			w.Handle(jobs.TypeResolve, asynq.HandlerFunc(func(ctx context.Context, tk *asynq.Task) error {
				err := h.ProcessTask(ctx, tk)
				if err != nil {
					t.Errorf("a run failed: %v", err)
				}
				return err
			}), nil)

			q := jobs.NewQueue(rdb, store, jobs.TaskOptions{})
			const plain, hooked = 12, 4
			ids := submitTestJobs(t, q, "key_complete", plain, hooked)
			if err := w.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(w.Shutdown)

			waitFor(t, 20*time.Second, "every task completed", func() bool {
				return terminals.Load() == plain+hooked && rdb.LLen(ctx, "asynq:{resolve}:active").Val() == 0 &&
					processed(rdb) == plain+hooked
			})
			for _, id := range ids {
				r, err := store.Get(ctx, "key_complete", id)
				if err != nil || r.Status != jobs.StatusDone {
					t.Fatalf("job %s: %s (%v)", id, r.Status, err)
				}
				if n := rdb.Exists(ctx, "asynq:{resolve}:t:"+id).Val(); n != 0 {
					t.Errorf("the task of job %s is left in Redis", id)
				}
			}
			if n := rdb.ZCard(ctx, "asynq:{resolve}:lease").Val(); n != 0 {
				t.Errorf("%d asynq leases left", n)
			}
			daily := "asynq:{resolve}:processed:" + time.Now().UTC().Format("2006-01-02")
			if n, _ := rdb.Get(ctx, daily).Int64(); n != plain+hooked {
				t.Errorf("the day's processed counter is %d, want %d", n, plain+hooked)
			}
			if ttl := rdb.TTL(ctx, daily).Val(); ttl < 80*24*time.Hour {
				t.Errorf("the day's processed counter expires in %v, want asynq's 90 days", ttl)
			}
			want := hooked
			if tc.cluster {
				want = plain + hooked
			}
			// asynq completes a task after its run ends: the last ones may still be on their way.
			waitFor(t, 5*time.Second, "asynq's completion of every task completed in its last write",
				func() bool { return jobs.AwaitingDone(w.Completions()) == 0 })
			if got := dones.count(); got != want {
				t.Errorf("asynq's completions sent to Redis: %d, want %d", got, want)
			}
		})
	}
}

// TestLastWriteFindsTheJobFinished: when the job is finished by another writer while this run
// resolves (its last write then conflicts, and the change re-applied to the record as it now
// stands declines), the run writes nothing, counts no finished job, and still calls the
// terminal hook for the job as it stands.
func TestLastWriteFindsTheJobFinished(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	ctx := context.Background()
	store := jobs.NewStore(rdb, time.Hour)
	res := &stubResolver{target: "https://dest.example/mine", started: make(chan struct{}, 1), gate: make(chan struct{})}
	var observed, terminals atomic.Int64
	var terminal atomic.Value
	h := &jobs.ResolveHandler{Store: store, Resolver: res, Logger: slog.New(slog.DiscardHandler), MaxAttempts: 1,
		Observe: func(jobs.Record, time.Duration) { observed.Add(1) },
		OnTerminal: func(_ context.Context, r jobs.Record) error {
			terminals.Add(1)
			terminal.Store(r)
			return nil
		}}
	rec := queuedJob(t, store, "key_raced")
	task, err := jobs.NewResolveTask(rec.ID, rec.KeyID, rec.URL, jobs.TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.ProcessTask(ctx, task) }()
	<-res.started
	other := "https://dest.example/other"
	if _, err := store.Update(ctx, rec.KeyID, rec.ID, func(r *jobs.Record) error {
		r.Status, r.TargetURL = jobs.StatusDone, &other
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(res.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := store.Get(ctx, rec.KeyID, rec.ID)
	if err != nil || got.Status != jobs.StatusDone || got.TargetURL == nil || *got.TargetURL != other {
		t.Fatalf("job %s target %v (%v), want the other writer's", got.Status, got.TargetURL, err)
	}
	if n := observed.Load(); n != 0 {
		t.Errorf("the run counted %d finished jobs, want 0: it finished none", n)
	}
	if r, _ := terminal.Load().(jobs.Record); terminals.Load() != 1 || r.TargetURL == nil || *r.TargetURL != other {
		t.Errorf("terminal hook called %d times, last with %v", terminals.Load(), r.TargetURL)
	}
}

// TestTerminalHookFailsAfterCompletion: when the last write of a job without a webhook has
// completed its asynq task and the terminal hook then fails, the run still succeeds: asynq no
// longer has the task, so an error would have it retry (or archive) a task that is gone. The
// job is done, its task completed once, nothing retried, failed or left awaiting completion.
func TestTerminalHookFailsAfterCompletion(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	ctx := context.Background()
	w := jobs.NewWorker(rdb, jobs.WorkerOptions{Concurrency: 2, ShutdownTimeout: time.Second})
	store := jobs.NewStore(rdb, time.Hour)
	var hooks atomic.Int64
	h := &jobs.ResolveHandler{Store: store, Resolver: &stubResolver{target: "https://dest.example/"},
		Logger: slog.New(slog.DiscardHandler), MaxAttempts: 3, Leases: w.Leases(), Complete: w.Completions(),
		OnTerminal: func(context.Context, jobs.Record) error { hooks.Add(1); return errors.New("the hook is down") }}
	var runs, failed atomic.Int64
	w.Handle(jobs.TypeResolve, asynq.HandlerFunc(func(ctx context.Context, tk *asynq.Task) error {
		runs.Add(1)
		err := h.ProcessTask(ctx, tk)
		if err != nil {
			failed.Add(1)
			t.Errorf("a run failed after its task was completed: %v", err)
		}
		return err
	}), nil)
	q := jobs.NewQueue(rdb, store, jobs.TaskOptions{MaxAttempts: 3})
	const n = 3
	ids := submitTestJobs(t, q, "key_hookfail", n, 0)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	waitFor(t, 20*time.Second, "every task completed", func() bool {
		return hooks.Load() == n && processed(rdb) == n && rdb.LLen(ctx, "asynq:{resolve}:active").Val() == 0
	})
	waitFor(t, 5*time.Second, "no completion left awaited", func() bool { return jobs.AwaitingDone(w.Completions()) == 0 })
	for _, id := range ids {
		if r, err := store.Get(ctx, "key_hookfail", id); err != nil || r.Status != jobs.StatusDone {
			t.Errorf("job %s: %s (%v)", id, r.Status, err)
		}
	}
	if r := runs.Load(); r != n || failed.Load() != 0 {
		t.Errorf("%d runs (%d failed) for %d jobs", r, failed.Load(), n)
	}
	for _, k := range []string{"asynq:{resolve}:retry", "asynq:{resolve}:archived"} {
		if c := rdb.ZCard(ctx, k).Val(); c != 0 {
			t.Errorf("%s holds %d tasks", k, c)
		}
	}
	if v, _ := rdb.Get(ctx, "asynq:{resolve}:failed").Int64(); v != 0 {
		t.Errorf("asynq counted %d failures", v)
	}
}
