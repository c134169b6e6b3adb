package jobs_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
)

// TestSubmitWaitsForReplicas: with REDIS_MIN_REPLICAS_ACK, a submit (single or batch) that its
// replica acknowledges is created as usual; one it does not (the replica is stopped) fails
// with replicas.ErrTooFew and leaves nothing behind: no record, no claim, no task, and the
// credits it took are back.
func TestSubmitWaitsForReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary, replica := redistest.PrimaryWithReplica(t)
	rdb := primary.Client(redis.Options{})
	store := jobs.NewStore(rdb, time.Hour)
	q := jobs.NewQueue(rdb, store, jobs.TaskOptions{MaxAttempts: 1, Timeout: time.Second})
	q.RequireReplicas(replicas.Ack{Min: 1, Timeout: 200 * time.Millisecond})
	credits := int64(10)
	k, err := keys.NewStore(rdb).Create(ctx, keys.CreateParams{Name: "durable", Credits: &credits})
	if err != nil {
		t.Fatal(err)
	}
	newRec := func(idem string) *jobs.Record {
		return &jobs.Record{ID: uuid.NewString(), KeyID: k.ID, URL: "https://sho.rt/" + idem, IdempotencyKey: idem, Provider: "short", Tier: "standard"}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ok := newRec("kept")
	if _, err := q.Submit(ctx, ok, 1); err != nil {
		t.Fatalf("acknowledged submit: %v", err)
	}
	if _, err := store.Get(ctx, k.ID, ok.ID); err != nil {
		t.Fatalf("acknowledged job: %v", err)
	}

	replica.Signal(syscall.SIGSTOP)
	defer replica.Signal(syscall.SIGCONT)
	lost := newRec("single")
	if _, err := q.Submit(ctx, lost, 1); !errors.Is(err, replicas.ErrTooFew) {
		t.Fatalf("unacknowledged submit: %v, want ErrTooFew", err)
	}
	items := []jobs.BatchItem{{Kind: jobs.BatchNew, Record: newRec("b1"), Cost: 1}, {Kind: jobs.BatchNew, Record: newRec("b2"), Cost: 1}}
	if _, err := q.SubmitBatch(ctx, k.ID, items); !errors.Is(err, replicas.ErrTooFew) {
		t.Fatalf("unacknowledged batch: %v, want ErrTooFew", err)
	}
	for _, r := range []*jobs.Record{lost, items[0].Record, items[1].Record} {
		if _, err := store.Get(ctx, k.ID, r.ID); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("job %s left behind: %v", r.IdempotencyKey, err)
		}
		if _, err := insp.GetTaskInfo(jobs.QueueResolve, r.ID); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("task of %s left behind: %v", r.IdempotencyKey, err)
		}
		if n, _ := rdb.Keys(ctx, keys.Tag(k.ID)+":idem:*").Result(); len(n) != 1 {
			t.Errorf("claims %v, want only the acknowledged job's", n)
		}
	}
	got, err := keys.NewStore(rdb).Get(ctx, k.ID)
	if err != nil || got.Credits == nil || *got.Credits != 9 {
		t.Errorf("balance %v (%v), want 9: only the acknowledged job is charged", got.Credits, err)
	}
}

// TestCreateKeyWaitsForReplicas: a key its replica does not acknowledge is not handed out and
// not left behind.
func TestCreateKeyWaitsForReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary, replica := redistest.PrimaryWithReplica(t)
	rdb := primary.Client(redis.Options{})
	s := keys.NewStore(rdb)
	s.RequireReplicas(replicas.Ack{Min: 1, Timeout: 200 * time.Millisecond})
	if _, err := s.Create(ctx, keys.CreateParams{Name: "acked"}); err != nil {
		t.Fatalf("acknowledged key: %v", err)
	}
	replica.Signal(syscall.SIGSTOP)
	defer replica.Signal(syscall.SIGCONT)
	if _, err := s.Create(ctx, keys.CreateParams{Name: "lost"}); !errors.Is(err, replicas.ErrTooFew) {
		t.Fatalf("unacknowledged key: %v, want ErrTooFew", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "acked" {
		t.Errorf("keys %+v %v, want only the acknowledged one", list, err)
	}
	if n, _ := rdb.Keys(ctx, "linkhop:{k:*}:key").Result(); len(n) != 1 {
		t.Errorf("key records %v, want one", n)
	}
}

// TestReplicatedHandler: a run that succeeded ends only once the replica holds its writes; an
// error of the handler is passed on untouched, and without the option the handler is as is.
func TestReplicatedHandler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary, replica := redistest.PrimaryWithReplica(t)
	rdb := primary.Client(redis.Options{})
	ran := 0
	var fail error
	h := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { ran++; return fail })
	task := asynq.NewTask(jobs.TypeResolve, []byte(`{"job_id":"j","key_id":"key_a"}`))
	ack := replicas.Ack{Min: 1, Timeout: 200 * time.Millisecond}
	w := jobs.Replicated(h, rdb, ack)
	if err := w.ProcessTask(ctx, task); err != nil {
		t.Fatalf("replica up: %v", err)
	}
	replica.Signal(syscall.SIGSTOP)
	defer replica.Signal(syscall.SIGCONT)
	if err := w.ProcessTask(ctx, task); !errors.Is(err, replicas.ErrTooFew) {
		t.Fatalf("replica stopped: %v, want ErrTooFew", err)
	}
	fail = errors.New("boom")
	if err := w.ProcessTask(ctx, task); err != fail { //nolint:errorlint // the very error
		t.Fatalf("a failed run: %v, want the handler's error", err)
	}
	if err := jobs.Replicated(h, rdb, replicas.Ack{}).ProcessTask(ctx, task); err != fail { //nolint:errorlint // the very error
		t.Fatalf("off: %v", err)
	}
	if ran != 4 {
		t.Errorf("the handler ran %d times, want 4", ran)
	}
}
