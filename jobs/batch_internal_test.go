package jobs

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/keys"
)

// TestEnqueueManySkipsExistingTasks: the enqueue script looks all tasks up at once and, only
// when one exists, one by one; either way a task that exists is neither rewritten nor pushed
// again, and the others are queued.
func TestEnqueueManySkipsExistingTasks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	q := NewQueue(rdb, NewStore(rdb, time.Hour), TaskOptions{MaxAttempts: 3, Timeout: time.Second})
	recs := func(n int) []*Record {
		var rs []*Record
		for range n {
			rs = append(rs, &Record{ID: uuid.NewString(), KeyID: "key_e"})
		}
		return rs
	}
	fresh := recs(3)
	if err := q.enqueueMany(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	// One of them is running now; a second batch names it again among new ones.
	running := fresh[1]
	if err := rdb.HSet(ctx, taskKey(QueueResolve, running.ID), "state", "active").Err(); err != nil {
		t.Fatal(err)
	}
	more := recs(2)
	if err := q.enqueueMany(ctx, []*Record{more[0], running, more[1]}); err != nil {
		t.Fatal(err)
	}
	if st := rdb.HGet(ctx, taskKey(QueueResolve, running.ID), "state").Val(); st != "active" {
		t.Errorf("the existing task was rewritten: state %q", st)
	}
	got, err := rdb.LRange(ctx, pendingKey(QueueResolve), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range append(fresh, more...) {
		want = append(want, r.ID)
		if st := rdb.HGet(ctx, taskKey(QueueResolve, r.ID), "state").Val(); r != running && st != "pending" {
			t.Errorf("task %s: state %q, want pending", r.ID, st)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("pending list %v, want each task once: %v", got, want)
	}
}

// TestUndoManyGivesBackWhatRecordsHold: undoing a batch gives back the credits its records
// still hold, not what the items cost: a job a worker already settled (here refunded) is not
// refunded twice, and a record already gone gives nothing back.
func TestUndoManyGivesBackWhatRecordsHold(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	store := NewStore(rdb, time.Hour)
	q := NewQueue(rdb, store, TaskOptions{MaxAttempts: 3, Timeout: time.Second})
	credits := int64(10)
	k, err := keys.NewStore(rdb).Create(ctx, keys.CreateParams{Name: "undo", Credits: &credits})
	if err != nil {
		t.Fatal(err)
	}
	var items []BatchItem
	for i := range 3 {
		items = append(items, BatchItem{Kind: BatchNew, Cost: 1, Record: &Record{ID: uuid.NewString(), KeyID: k.ID,
			URL: "https://sho.rt/u", IdempotencyKey: fmt.Sprint("u", i), Provider: "short", Tier: "standard"}})
	}
	res, err := q.SubmitBatch(ctx, k.ID, items)
	if err != nil {
		t.Fatal(err)
	}
	balance := func() int64 {
		t.Helper()
		got, err := keys.NewStore(rdb).Get(ctx, k.ID)
		if err != nil || got.Credits == nil {
			t.Fatalf("balance: %v", err)
		}
		return *got.Credits
	}
	if b := balance(); b != 7 {
		t.Fatalf("balance %d after 3 jobs of 1, want 7", b)
	}
	// The first job is refunded by a worker (its record holds nothing, the credit is back);
	// the second's record is gone.
	if _, err := store.Update(ctx, k.ID, items[0].Record.ID, func(r *Record) error {
		r.refund, r.CreditsHeld = r.CreditsHeld, 0
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, RecordKey(k.ID, items[1].Record.ID)).Err(); err != nil {
		t.Fatal(err)
	}
	if b := balance(); b != 8 {
		t.Fatalf("balance %d after the refund, want 8", b)
	}
	if err := q.undoMany(ctx, k.ID, res); err != nil {
		t.Fatal(err)
	}
	if b := balance(); b != 9 {
		t.Errorf("balance %d after the undo, want 9: only the third job's credit was still held", b)
	}
	if n := rdb.Exists(ctx, RecordKey(k.ID, items[0].Record.ID), RecordKey(k.ID, items[2].Record.ID)).Val(); n != 0 {
		t.Errorf("%d records left after the undo", n)
	}
	if n, _ := rdb.Keys(ctx, keys.Tag(k.ID)+":idem:*").Result(); len(n) != 0 {
		t.Errorf("claims left after the undo: %v", n)
	}
}

// TestResolveTaskMessageIsAsynqs: the task message that the one-script submit and the batch's
// enqueue write themselves is, byte for byte, the one asynq's own client stores for the same
// task, with the link's URL in its payload and without (a task of an earlier version).
func TestResolveTaskMessageIsAsynqs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	client := asynq.NewClientFromRedisClient(rdb)
	o := TaskOptions{MaxAttempts: 2, Timeout: 3 * time.Second}
	for _, url := range []string{"https://sho.rt/x?a=1&b=é", ""} {
		id := uuid.NewString()
		task, err := NewResolveTask(id, "key_m", url, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.EnqueueContext(ctx, task); err != nil {
			t.Fatal(err)
		}
		want, err := rdb.HGet(ctx, taskKey(QueueResolve, id), "msg").Bytes()
		if err != nil {
			t.Fatal(err)
		}
		got, err := resolveTaskMessage(ctx, id, "key_m", url, o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("url %q: message\n%x\nasynq's\n%x", url, got, want)
		}
	}
}
