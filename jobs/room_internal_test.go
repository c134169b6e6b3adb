package jobs

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// TestRoomSlots: attempts come due together, and the Room makes at most its slots of them at
// once; one still waiting for a slot when the Room closes is handed back, not made.
func TestRoomSlots(t *testing.T) {
	t.Parallel()
	r := newRoom(10, 2, time.Second)
	var running, most, made, abandoned atomic.Int64
	release := make(chan struct{})
	for range 5 {
		if !r.reserve() {
			t.Fatal("an empty room refused an attempt")
		}
		r.start(0, func(context.Context) {
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			made.Add(1)
		}, func(context.Context) { abandoned.Add(1) })
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a third to start, were the bound not kept
	if got := most.Load(); got != 2 {
		t.Fatalf("%d attempts made at once, want the 2 slots", got)
	}
	done := r.close()
	time.Sleep(50 * time.Millisecond) // the three waiting for a slot see the close
	close(release)
	<-done
	if made.Load() != 2 || abandoned.Load() != 3 {
		t.Errorf("made %d, handed back %d; want 2 and 3", made.Load(), abandoned.Load())
	}
	if r.reserve() {
		t.Error("a closed room took an attempt")
	}
}

// TestParkCompletesTask: the write that parks a waiting attempt's job lease completes the
// asynq task of the run that parked it, as asynq's Done would (and asynq's Done is then
// answered without Redis), also when Redis has forgotten the script; a task that is no longer
// active is left alone, and the lease is parked all the same.
func TestParkCompletesTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	ls := NewLeases(rdb, LeaseOptions{TTL: time.Second})
	c := newTaskCompletions(rdb)
	for _, tc := range []struct {
		name           string
		active, forget bool
	}{
		{name: "active task", active: true},
		{name: "script forgotten", active: true, forget: true},
		{name: "task no longer active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "park-" + strings.ReplaceAll(tc.name, " ", "-")
			td := c.taskOf(QueueWebhooks, id)
			if err := rdb.HSet(ctx, td.task, "msg", "x").Err(); err != nil {
				t.Fatal(err)
			}
			if tc.active {
				if err := rdb.LPush(ctx, td.active, id).Err(); err != nil {
					t.Fatal(err)
				}
				if err := rdb.ZAdd(ctx, td.lease, redis.Z{Score: 1, Member: id}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if tc.forget {
				if err := rdb.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			var take func() (*Lease, context.Context, error)
			if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				take = ls.TakeIn(ctx, p, LeaseRef{Kind: LeaseWebhook, KeyID: "k", JobID: id, Gen: 1, Task: id})
				return nil
			}); err != nil && !isNoScript(err) {
				t.Fatal(err)
			}
			l, _, err := take()
			if err != nil {
				t.Fatal(err)
			}
			until := time.UnixMilli(time.Now().Add(time.Minute).UnixMilli())
			var park func() error
			_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				park = ls.parkIn(ctx, p, l, until, td)
				return nil
			})
			if err := park(); err != nil {
				t.Fatal(err)
			}
			if score, err := rdb.ZScore(ctx, leaseHeldKey, l.ref.member()).Result(); err != nil || int64(score) != until.UnixMilli() {
				t.Errorf("the lease lapses at %v (%v), want %d", score, err, until.UnixMilli())
			}
			exists, err := rdb.Exists(ctx, td.task).Result()
			if err != nil {
				t.Fatal(err)
			}
			if completed := c.take(td.task); completed != tc.active || (exists == 0) != tc.active {
				t.Errorf("completed here %v, task hash left %d; want completed %v", completed, exists, tc.active)
			}
			if n, err := rdb.LLen(ctx, td.active).Result(); err != nil || n != 0 {
				t.Errorf("%d tasks left active (%v)", n, err)
			}
		})
	}
	if n, err := rdb.Get(ctx, c.taskOf(QueueWebhooks, "any").total).Int(); err != nil || n != 2 {
		t.Errorf("the queue's processed total is %d (%v), want 2", n, err)
	}
}
