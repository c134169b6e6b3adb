package jobs

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// pollCounter counts asynq's polling scripts as the idle back-off tells them.
type pollCounter struct{ dequeues, forwards atomic.Int64 }

func (c *pollCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *pollCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *pollCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		d, f := asynqPoll(cmd)
		if d {
			c.dequeues.Add(1)
		}
		if f {
			c.forwards.Add(1)
		}
		return next(ctx, cmd)
	}
}

// TestIdleBackoff: an idle worker's polling slows to a few scripts a second, the first job
// after the quiet spell is still run (within a hold), polling is at full speed again after
// it, and Shutdown does not wait for a hold. Bounds are generous: the machine may be busy.
func TestIdleBackoff(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	counter := &pollCounter{}
	rdb.AddHook(counter) // before the worker's: it counts every poll as sent

	w := NewWorker(rdb, WorkerOptions{Concurrency: 2, ShutdownTimeout: time.Second,
		Queues: map[string]int{QueueResolve: 1, QueueWebhooks: 1}})
	set := func(after, dequeueMax, forwardMax time.Duration) {
		w.idle.mu.Lock()
		w.idle.after, w.idle.dequeueMax, w.idle.forwardMax = after, dequeueMax, forwardMax
		w.idle.mu.Unlock()
	}
	set(300*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond)
	ran := make(chan struct{}, 1)
	w.Handle("test:idle", asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		ran <- struct{}{}
		return nil
	}), nil)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			w.Shutdown()
		}
	}()

	// Busy start: within idle.after, asynq polls at full speed.
	time.Sleep(250 * time.Millisecond)
	if n := counter.dequeues.Load(); n < 5 {
		t.Fatalf("%d dequeues in the first 250 ms: the test does not see asynq's dequeue script (has asynq changed its keys?)", n)
	}
	if counter.forwards.Load() == 0 {
		t.Fatal("no forwarder script seen (has asynq changed its keys?)")
	}
	// Idle: after the quiet time has grown past the cap, about one dequeue per hold.
	time.Sleep(1500 * time.Millisecond)
	before := counter.dequeues.Load()
	time.Sleep(time.Second)
	idle := counter.dequeues.Load() - before
	if idle > 25 {
		t.Fatalf("%d dequeue scripts in one idle second, want at most ~5-10 (holds of 200 ms)", idle)
	}
	t.Logf("idle dequeues: %d in 1 s (asynq alone polls each queue every 5-15 ms)", idle)

	c := asynq.NewClientFromRedisClient(rdb)
	if _, err := c.Enqueue(asynq.NewTask("test:idle", nil), asynq.Queue(QueueResolve)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the job queued while the worker was idle did not run")
	}
	if h := w.idle.hold(false); h != 0 {
		t.Fatalf("hold %s right after work; want none", h)
	}

	// A hold in progress does not delay the shutdown.
	set(0, time.Hour, time.Hour)
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	w.Shutdown()
	stopped = true
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("Shutdown took %s with a long hold in progress", d)
	}
}
