package jobs

import (
	"context"
	"errors"
	"slices"
	"strings"
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
func startWorker(tb testing.TB, w *Worker) (shutdown func()) {
	tb.Helper()
	if err := w.Start(); err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	shutdown = func() { once.Do(w.Shutdown) }
	tb.Cleanup(shutdown)
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
// after the quiet spell is still run, nothing is held right after it, and Shutdown does not
// wait for a hold. Bounds are generous: the machine may be busy.
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

	// asynq's first round of dequeues, one per queue, then a wait for work.
	time.Sleep(250 * time.Millisecond)
	if n := counter.dequeues.Load(); n < 2 {
		t.Fatalf("%d dequeues in the first 250 ms: the test does not see asynq's dequeue script (has asynq changed its keys?)", n)
	}
	if counter.forwards.Load() == 0 {
		t.Fatal("no forwarder script seen (has asynq changed its keys?)")
	}
	// Idle: a round of dequeues per wait for work (a second).
	time.Sleep(1500 * time.Millisecond)
	before := counter.dequeues.Load()
	time.Sleep(time.Second)
	idle := counter.dequeues.Load() - before
	if idle > 25 {
		t.Fatalf("%d dequeue scripts in one idle second, want at most ~2-4 (a round per wait of 1 s)", idle)
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

// TestIdleWorkerWakesForWork: a worker without work waits on its queues' lists, and a job or a
// webhook queued during a wait starts at once, not when the wait ends; a paused queue with
// work does not make the worker poll at full speed; the waits are idle polls, not a job's
// round trips; a shutdown waits for the BLMOVEs in flight.
func TestIdleWorkerWakesForWork(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	counter := &pollCounter{}
	rdb.AddHook(counter.hook())
	var blmoves atomic.Int64
	rdb.AddHook(cmdSeen{func(cmd redis.Cmder) {
		if idleWait(cmd) {
			blmoves.Add(1)
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
	// waitStarted returns once the worker waits for work on both lists.
	waitStarted := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			w.idle.mu.Lock()
			waiting := len(w.idle.waiters) > 0 && w.idle.armed[pendingKey(QueueResolve)] && w.idle.armed[pendingKey(QueueWebhooks)]
			w.idle.mu.Unlock()
			if waiting {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the worker never waited on its queues' lists")
			}
			time.Sleep(5 * time.Millisecond)
		}
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

	// A paused resolve queue with a job on its list: the wait ends at once, the dequeue
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

	// A shutdown during a wait ends once the BLMOVEs in flight have (4 s here), and leaves
	// none.
	waitStarted()
	began = time.Now()
	shutdown()
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("Shutdown took %s during a 4 s wait", d)
	}
	w.idle.Drain() // returns at once: Shutdown drained them
	w.idle.mu.Lock()
	for k, on := range w.idle.armed {
		if on {
			t.Errorf("a BLMOVE on %s is still in flight after Shutdown", k)
		}
	}
	w.idle.mu.Unlock()
	t.Logf("%d BLMOVEs in all", blmoves.Load())

	// The waits are idle polls.
	if !IsIdlePoll(redis.NewStringCmd(context.Background(), "blmove", pendingKey(QueueResolve), pendingKey(QueueResolve), "RIGHT", "RIGHT", 1), nil) {
		t.Error("IsIdlePoll does not count the wait for work as an idle poll")
	}
}

// dequeueCmd is asynq's dequeue script of the queue of pending list list, as asynq sends it.
func dequeueCmd(ctx context.Context, list string) *redis.Cmd {
	q := strings.TrimSuffix(list, "pending")
	return redis.NewCmd(ctx, "evalsha", "sha", 4, list, q+"paused", q+"active", q+"lease", int64(123), q+"t:")
}

// TestIdleWaitRunsTheWokenQueuesDequeue: a worker that has just worked waits too, once a
// round of dequeues found every queue empty (and not before: the round's other queues are
// still to be asked); a task on another queue's list ends the wait, and that queue's dequeue
// runs in place of the waiting one, whose caller gets its task; a wake whose dequeue then finds
// nothing (a paused queue, another worker first) is held; the lists are left as they were.
func TestIdleWaitRunsTheWokenQueuesDequeue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	first, other := pendingKey(QueueResolve), pendingKey(QueueWebhooks)
	b := newIdleBackoff(rdb, first, other)
	b.block, b.after, b.dequeueMax = 2*time.Second, time.Hour, 300*time.Millisecond
	b.worked("") // busy: no hold
	dequeue := func(list string) *redis.Cmd { return dequeueCmd(ctx, list) }
	var ran [][]any // the dequeues run again by the hook
	paused := false
	next := func(_ context.Context, cmd redis.Cmder) error {
		ran = append(ran, cmd.Args())
		c := cmd.(*redis.Cmd)
		if n, _ := rdb.LLen(ctx, cmd.Args()[3].(string)).Result(); n > 0 && !paused {
			c.SetVal("task of " + cmd.Args()[3].(string))
			return nil
		}
		c.SetErr(redis.Nil)
		return redis.Nil
	}
	timed := func(cmd *redis.Cmd) (time.Duration, error) {
		began := time.Now()
		err := b.idle(ctx, cmd, next, redis.Nil)
		return time.Since(began), err
	}

	// The round's first empty dequeue does not wait: the other queue is still to be asked.
	if d, err := timed(dequeue(other)); !errors.Is(err, redis.Nil) || d > 2*time.Second {
		t.Fatalf("the round's first empty dequeue: %v after %s, want redis.Nil at once", err, d)
	}
	// The round's last one waits, and a task queued on the other list ends the wait: the
	// other queue's dequeue runs, and the waiting call gets its task.
	go func() {
		time.Sleep(200 * time.Millisecond)
		rdb.LPush(ctx, other, "task")
	}()
	cmd := dequeue(first)
	d, err := timed(cmd)
	if err != nil || cmd.Val() != "task of "+other {
		t.Fatalf("the waiting dequeue answered %v %v, want the other queue's task", cmd.Val(), err)
	}
	if d < 150*time.Millisecond {
		t.Fatalf("the wait took %s; want it to last until the task was queued, 200 ms on", d)
	}
	q := strings.TrimSuffix(other, "pending")
	want := []any{"evalsha", "sha", 4, other, q + "paused", q + "active", q + "lease", int64(123), q + "t:"}
	if len(ran) != 1 || !slices.Equal(ran[0], want) {
		t.Fatalf("dequeues run again: %v, want %v", ran, want)
	}

	// A wake whose dequeue finds nothing is held (the cap: idle for an hour).
	paused = true
	b.mu.Lock()
	b.lastWork = time.Now().Add(-2 * time.Hour)
	b.mu.Unlock()
	timed(dequeue(first))
	if d, err := timed(dequeue(other)); !errors.Is(err, redis.Nil) || d < 250*time.Millisecond {
		t.Fatalf("a fruitless wake: %v after %s, want redis.Nil after a hold of 300 ms", err, d)
	}
	if l, _ := rdb.LRange(ctx, other, 0, -1).Result(); len(l) != 1 || l[0] != "task" {
		t.Fatalf("the waits changed the list: %v", l)
	}
	b.Stop()
	b.Drain()
}

// TestIdleKnownEmptyListIsNotAsked: waits share their BLMOVEs (one per list in flight); a
// dequeue of a queue whose list has one in flight is answered "nothing" without Redis, and is
// no Redis call in the counts (AnsweredWithoutRedis, not IsIdlePoll); a task queued on such a
// list is still found.
func TestIdleKnownEmptyListIsNotAsked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	first, other := pendingKey(QueueResolve), pendingKey(QueueWebhooks)
	b, hook, blmoves, sent := fakeDequeues(rdb, nil, first, other)
	dequeue := func(list string) *redis.Cmd { return dequeueCmd(ctx, list) }
	for range 3 { // three waits, one BLMOVE per list
		b.mu.Lock()
		b.join()
		b.mu.Unlock()
	}
	deadline := time.Now().Add(5 * time.Second)
	for blmoves.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for any BLMOVE a wait should not have sent
	if n := blmoves.Load(); n != 2 {
		t.Fatalf("%d BLMOVEs for three waits on two empty lists, want 2", n)
	}

	cmd := dequeue(other)
	if err := hook(ctx, cmd); !errors.Is(err, redis.Nil) {
		t.Fatalf("a dequeue of a list with a BLMOVE in flight answered %v, want redis.Nil", err)
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("%d dequeues sent to Redis, want none", n)
	}
	if !AnsweredWithoutRedis(cmd) || IsIdlePoll(cmd, redis.Nil) {
		t.Fatalf("AnsweredWithoutRedis %v, IsIdlePoll %v; want true, false", AnsweredWithoutRedis(cmd), IsIdlePoll(cmd, redis.Nil))
	}

	// A task queued on a watched list is found, whether its BLMOVE has ended yet or not.
	if err := rdb.LPush(ctx, other, "task").Err(); err != nil {
		t.Fatal(err)
	}
	cmd = dequeue(other)
	if err := hook(ctx, cmd); err != nil || cmd.Val() != "task of "+other {
		t.Fatalf("the dequeue after a task was queued answered %v %v, want the task", cmd.Val(), err)
	}
	if AnsweredWithoutRedis(cmd) {
		t.Fatal("a dequeue that found a task counted as answered without Redis")
	}
	b.Stop()
	b.Drain()
}

// TestIdleBusyWorkerSkipsEmptyQueue: a dequeue that finds its queue empty while another queue
// has work starts no wait, but a BLMOVE on the empty list, and the worker's next dequeues of
// that queue are answered without Redis until a task arrives on it; then the task is found.
func TestIdleBusyWorkerSkipsEmptyQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	busy, empty := pendingKey(QueueResolve), pendingKey(QueueWebhooks)
	if err := rdb.LPush(ctx, busy, "work").Err(); err != nil {
		t.Fatal(err)
	}
	b, hook, blmoves, sent := fakeDequeues(rdb, nil, busy, empty)
	if err := hook(ctx, dequeueCmd(ctx, empty)); !errors.Is(err, redis.Nil) || sent.Load() != 1 {
		t.Fatalf("first dequeue of the empty queue: %v, %d sent; want redis.Nil from Redis", err, sent.Load())
	}
	b.mu.Lock()
	waits := len(b.waiters)
	b.mu.Unlock()
	if waits != 0 {
		t.Fatalf("%d waits begun while another queue has work", waits)
	}
	deadline := time.Now().Add(5 * time.Second)
	for blmoves.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no BLMOVE on the empty queue's list")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range 3 {
		cmd := dequeueCmd(ctx, empty)
		if err := hook(ctx, cmd); !errors.Is(err, redis.Nil) || !AnsweredWithoutRedis(cmd) {
			t.Fatalf("dequeue of the watched empty queue: %v, answered without Redis %v", err, AnsweredWithoutRedis(cmd))
		}
		cmd = dequeueCmd(ctx, busy)
		if err := hook(ctx, cmd); err != nil || cmd.Val() != "task of "+busy {
			t.Fatalf("dequeue of the busy queue: %v %v", cmd.Val(), err)
		}
	}
	if n := sent.Load(); n != 4 {
		t.Fatalf("%d dequeues sent to Redis, want 4 (the first of the empty queue, three of the busy one)", n)
	}

	// A task on the watched list ends its BLMOVE, and the next dequeue finds it.
	if err := rdb.LPush(ctx, empty, "task").Err(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		cmd := dequeueCmd(ctx, empty)
		err := hook(ctx, cmd)
		if err == nil && cmd.Val() == "task of "+empty {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task queued on the watched list was not found: %v %v", cmd.Val(), err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Stop()
	b.Drain()
}

// TestIdleBusyWorkerLeavesPausedQueue: a queue that holds tasks but gives none out (paused in
// asynqmon) ends a busy worker's BLMOVE on it at once; the worker then leaves that list
// unwatched for a while rather than send a BLMOVE beside each of its dequeues. Without that, 20
// dequeues of the paused queue sent about 20 BLMOVEs.
func TestIdleBusyWorkerLeavesPausedQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	busy, paused := pendingKey(QueueResolve), pendingKey(QueueWebhooks)
	for _, l := range []string{busy, paused} {
		if err := rdb.LPush(ctx, l, "task").Err(); err != nil {
			t.Fatal(err)
		}
	}
	b, hook, blmoves, _ := fakeDequeues(rdb, map[string]bool{paused: true}, busy, paused)
	b.block = time.Minute // the time the paused list stays unwatched; its BLMOVEs end at once
	for range 20 {
		if err := hook(ctx, dequeueCmd(ctx, paused)); !errors.Is(err, redis.Nil) {
			t.Fatalf("dequeue of the paused queue: %v, want redis.Nil", err)
		}
		cmd := dequeueCmd(ctx, busy)
		if err := hook(ctx, cmd); err != nil || cmd.Val() != "task of "+busy {
			t.Fatalf("dequeue of the busy queue: %v %v", cmd.Val(), err)
		}
		time.Sleep(10 * time.Millisecond) // time for a BLMOVE on a list with a task to end
	}
	if n := blmoves.Load(); n < 1 || n > 2 {
		t.Fatalf("%d BLMOVEs on the paused queue's list for 20 dequeues, want 1 (2 at most)", n)
	}
	b.Stop()
	b.Drain()
}

// fakeDequeues is a back-off on rdb watching lists, that has just worked, and its hook around
// a stand-in for asynq's dequeue: a task ("task of LIST") when the list holds anything and is
// not paused, else redis.Nil; sent counts the dequeues that reached it, blmoves the back-off's
// BLMOVEs.
func fakeDequeues(rdb redis.UniversalClient, paused map[string]bool, lists ...string) (b *idleBackoff, hook redis.ProcessHook, blmoves, sent *atomic.Int64) {
	blmoves, sent = &atomic.Int64{}, &atomic.Int64{}
	rdb.AddHook(cmdSeen{func(cmd redis.Cmder) {
		if idleWait(cmd) {
			blmoves.Add(1)
		}
	}})
	b = newIdleBackoff(rdb, lists...)
	b.block = time.Second
	b.worked("")
	next := func(ctx context.Context, cmd redis.Cmder) error {
		sent.Add(1)
		c := cmd.(*redis.Cmd)
		list := cmd.Args()[3].(string)
		if n, _ := rdb.LLen(ctx, list).Result(); n > 0 && !paused[list] {
			c.SetVal("task of " + list)
			return nil
		}
		c.SetErr(redis.Nil)
		return redis.Nil
	}
	return b, b.ProcessHook(next), blmoves, sent
}
