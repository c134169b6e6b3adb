package jobs

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkhop/linkhop/internal/redistest"
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
