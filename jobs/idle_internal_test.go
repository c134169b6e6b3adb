package jobs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// cmdSeen is a go-redis hook that shows every single command to fn before it is sent.
type cmdSeen struct{ fn func(redis.Cmder) }

func (h cmdSeen) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h cmdSeen) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h cmdSeen) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.fn(cmd)
		return next(ctx, cmd)
	}
}

// startWorker starts w and shuts it down when the test ends, unless the test did (shutdown).
func startWorker(t *testing.T, w *Worker) (shutdown func()) {
	t.Helper()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	shutdown = func() { once.Do(w.Shutdown) }
	t.Cleanup(shutdown)
	return shutdown
}

// pollCounter counts asynq's polling scripts as the idle back-off tells them.
type pollCounter struct{ dequeues, forwards atomic.Int64 }

// hook is the counting hook.
func (c *pollCounter) hook() cmdSeen {
	return cmdSeen{func(cmd redis.Cmder) {
		d, f := asynqPoll(cmd)
		if d {
			c.dequeues.Add(1)
		}
		if f {
			c.forwards.Add(1)
		}
	}}
}

// TestIdleBackoff: an idle worker's polling slows to a few scripts a second, the first job
// after the quiet spell is still run (within a hold), polling is at full speed again after
// it, and Shutdown does not wait for a hold. Bounds are generous: the machine may be busy.
func TestIdleBackoff(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	counter := &pollCounter{}
	rdb.AddHook(counter.hook()) // before the worker's: it counts every poll as sent

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
	shutdown := startWorker(t, w)

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
	shutdown()
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("Shutdown took %s with a long hold in progress", d)
	}
}

// TestIdleWorkerWakesForWork: an idle worker waits on its queues' lists, and a job or a
// webhook queued during a wait starts at once, not when the wait ends; a paused queue with
// work does not make the worker poll at full speed; the waits are idle polls, not a job's
// round trips; a shutdown waits for the waits in flight.
func TestIdleWorkerWakesForWork(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	counter := &pollCounter{}
	rdb.AddHook(counter.hook())
	started := make(chan struct{}, 1) // a blocking wait for work began
	rdb.AddHook(cmdSeen{func(cmd redis.Cmder) {
		if idleWait(cmd) {
			select {
			case started <- struct{}{}:
			default:
			}
		}
	}})

	w := NewWorker(rdb, WorkerOptions{Concurrency: 2, ShutdownTimeout: time.Second,
		Queues: map[string]int{QueueResolve: 1, QueueWebhooks: 1}})
	w.idle.mu.Lock()
	w.idle.after, w.idle.block = 100*time.Millisecond, 4*time.Second
	w.idle.mu.Unlock()
	ran := make(chan string, 4)
	w.Handle("test:wake", asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		ran <- string(task.Payload())
		return nil
	}), nil)
	shutdown := startWorker(t, w)
	c := asynq.NewClientFromRedisClient(rdb)
	enqueue := func(queue, name string) {
		t.Helper()
		if _, err := c.Enqueue(asynq.NewTask("test:wake", []byte(name)), asynq.Queue(queue)); err != nil {
			t.Fatal(err)
		}
	}
	drain := func() {
		for {
			select {
			case <-started:
			default:
				return
			}
		}
	}
	// waitStarted returns once a fresh wait has begun (its BLMOVEs, one per queue, sent).
	waitStarted := func() {
		t.Helper()
		drain()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the idle worker never waited on its queues' lists")
		}
		time.Sleep(100 * time.Millisecond)
		drain()
	}

	// A resolve job queued during a 4 s wait runs long before the wait would have ended.
	waitStarted()
	began := time.Now()
	enqueue(QueueResolve, "resolve")
	select {
	case got := <-ran:
		d := time.Since(began)
		if got != "resolve" || d > 2*time.Second {
			t.Fatalf("%q ran %s after it was queued during the wait; want the resolve job, at once", got, d)
		}
		t.Logf("the resolve job queued during a 4 s wait ran %s after it was queued", d)
	case <-time.After(10 * time.Second):
		t.Fatal("the resolve job queued during the wait did not run")
	}

	// So does a webhook: every queue's list is waited on.
	waitStarted()
	began = time.Now()
	enqueue(QueueWebhooks, "webhook")
	select {
	case got := <-ran:
		if d := time.Since(began); got != "webhook" || d > 2*time.Second {
			t.Fatalf("%q ran %s after it was queued during the wait; want the webhook, at once", got, d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook queued during a wait did not run")
	}

	// A paused resolve queue with a job on its list: the wait returns at once, the dequeue
	// finds nothing, and the worker holds instead of polling at full speed.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if err := insp.PauseQueue(QueueResolve); err != nil {
		t.Fatal(err)
	}
	waitStarted()
	enqueue(QueueResolve, "paused")
	time.Sleep(2 * time.Second) // the worker is idle again, with growing holds
	before := counter.dequeues.Load()
	time.Sleep(time.Second)
	if n := counter.dequeues.Load() - before; n > 25 {
		t.Fatalf("%d dequeues in one second with a paused queue holding a job: the wait does not hold", n)
	}
	select {
	case got := <-ran:
		t.Fatalf("%q ran from a paused queue", got)
	default:
	}
	if err := insp.UnpauseQueue(QueueResolve); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the job of the unpaused queue did not run")
	}

	// A shutdown during a wait ends once the waits in flight have (4 s here), and leaves none.
	waitStarted()
	began = time.Now()
	shutdown()
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("Shutdown took %s during a 4 s wait", d)
	}
	w.idle.Drain() // returns at once: Shutdown drained them

	// The waits are idle polls.
	if !IsIdlePoll(redis.NewStringCmd(context.Background(), "blmove", pendingKey(QueueResolve), pendingKey(QueueResolve), "RIGHT", "RIGHT", 1), nil) {
		t.Error("IsIdlePoll does not count the wait for work as an idle poll")
	}
}

// TestIdleWaitWokenByAnotherQueue: a wait that work on another queue's list ended is not
// followed by a hold in the first queue's dequeue (that queue's own dequeue finds the work);
// when that queue's dequeue then finds nothing (paused, or another worker was first), its
// empty answer is held once, and the next wait begins again.
func TestIdleWaitWokenByAnotherQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	first, other := pendingKey(QueueResolve), pendingKey(QueueWebhooks)
	b := newIdleBackoff(rdb, first, other)
	b.after, b.dequeueMax = 0, 300*time.Millisecond
	b.lastWork = time.Now().Add(-time.Hour) // idle: every hold is the cap
	dequeue := func(list string) redis.Cmder {
		return redis.NewCmd(ctx, "evalsha", "sha", 4, list, "paused", "active", "lease")
	}
	empty := func(context.Context, redis.Cmder) error { return redis.Nil }
	timed := func(list string) time.Duration {
		began := time.Now()
		if err := b.idle(ctx, dequeue(list), empty, redis.Nil); !errors.Is(err, redis.Nil) {
			t.Fatalf("idle answered %v for an empty queue", err)
		}
		return time.Since(began)
	}

	if err := rdb.LPush(ctx, other, "task").Err(); err != nil {
		t.Fatal(err)
	}
	// The first queue's dequeue waits, and work on the other list ends the wait at once.
	if d := timed(first); d > 900*time.Millisecond {
		t.Fatalf("the wait took %s with work on the other queue's list", d)
	}
	if b.wokeBy != other {
		t.Fatalf("woken by %q, want %q", b.wokeBy, other)
	}
	// Not held in the first queue's next dequeue: the other queue's dequeue is to find it.
	if d := timed(first); d > 100*time.Millisecond {
		t.Fatalf("the first queue's dequeue after a wake by another queue took %s: held", d)
	}
	// The other queue's dequeue found nothing (say it is paused): held once, the cap.
	if d := timed(other); d < 250*time.Millisecond {
		t.Fatalf("an empty dequeue of the queue whose work woke the wait took %s: not held", d)
	}
	if b.wokeBy != "" {
		t.Fatalf("wokeBy %q after the hold", b.wokeBy)
	}
	if l, _ := rdb.LRange(ctx, other, 0, -1).Result(); len(l) != 1 || l[0] != "task" {
		t.Fatalf("the waits changed the list: %v", l)
	}
	b.Stop()
	b.Drain()
}
