package jobs

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// retryTask lays out task id as asynq leaves a task it retries: its hash in state "retry" and
// the id in the retry set, due (in asynq's whole seconds) long after any place of this test.
func retryTask(t *testing.T, rdb redis.UniversalClient, id, state string) {
	t.Helper()
	ctx := context.Background()
	// In one transaction, as asynq's retry script writes them: a Line's pass between the two
	// would see a retry not yet in the set, and drop its place.
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, taskKey(QueueWebhooks, id), "state", state, "msg", "x")
		if state == "retry" {
			p.ZAdd(ctx, "asynq:{"+QueueWebhooks+"}:retry", redis.Z{Score: float64(time.Now().Add(time.Hour).Unix()), Member: id})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLineMovesAtPlace: a task is moved from asynq's retry set to the front of the pending
// list within the lead before its place, not sooner; a task whose retry is not yet written
// (still active) keeps its place until it is; a task in any other state only loses its place.
func TestLineMovesAtPlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	redisNow := func() time.Time {
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now
	}
	pending := pendingKey(QueueWebhooks)
	if err := rdb.LPush(ctx, pending, "waiting").Err(); err != nil { // queued before: still behind
		t.Fatal(err)
	}
	retryTask(t, rdb, "placed", "retry")
	retryTask(t, rdb, "running", "active")
	retryTask(t, rdb, "gone", "pending")
	l := newLine(rdb, slog.New(slog.DiscardHandler), newIdleBackoff(nil))
	at := redisNow().Add(400 * time.Millisecond)
	place := func(task string, at time.Time) {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			l.placeIn(ctx, p, task, at)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		l.placed(at)
	}
	l.start()
	t.Cleanup(l.shutdown)
	place("placed", at)
	place("running", at)
	place("gone", at)

	// Not moved before its place less the lead.
	for redisNow().Before(at.Add(-lineLead - 50*time.Millisecond)) {
		if n := rdb.ZCard(ctx, "asynq:{"+QueueWebhooks+"}:retry").Val(); n != 1 {
			t.Fatalf("moved %s early: %d tasks left in the retry set", time.Until(at), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Moved by its place, with a generous margin for a busy machine.
	deadline := at.Add(500 * time.Millisecond)
	for rdb.ZCard(ctx, "asynq:{"+QueueWebhooks+"}:retry").Val() != 0 {
		if redisNow().After(deadline) {
			t.Fatal("the task was not moved at its place")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := rdb.LRange(ctx, pending, 0, -1).Val(); len(got) != 2 || got[1] != "placed" {
		t.Errorf("pending list %v: want the placed task at the end asynq takes from", got)
	}
	if st := rdb.HGet(ctx, taskKey(QueueWebhooks, "placed"), "state").Val(); st != "pending" {
		t.Errorf("moved task in state %q", st)
	}
	if rdb.HGet(ctx, taskKey(QueueWebhooks, "placed"), "pending_since").Val() == "" {
		t.Error("moved task without pending_since, which asynq's inspector reads")
	}
	if err := rdb.ZScore(ctx, lineKey, "placed").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("moved task's place still in line: %v", err)
	}
	if err := rdb.ZScore(ctx, lineKey, "gone").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("place of a task no longer in the retry set still in line: %v", err)
	}
	if rdb.HGet(ctx, taskKey(QueueWebhooks, "gone"), "state").Val() != "pending" || rdb.LLen(ctx, pending).Val() != 2 {
		t.Error("a task not in the retry set was touched")
	}
	// The running task's retry lands: it is moved at once.
	if rdb.ZScore(ctx, lineKey, "running").Err() != nil {
		t.Fatal("a running task lost its place before its retry was written")
	}
	retryTask(t, rdb, "running", "retry")
	deadline = time.Now().Add(2 * time.Second)
	for rdb.LLen(ctx, pending).Val() != 3 {
		if time.Now().After(deadline) {
			t.Fatal("a task whose retry landed after its place was not moved")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLinePassKeepsOrder: the tasks one pass moves are taken in the order of their places, the
// first due first, ahead of a task that was waiting in the list. asynq takes tasks from the
// list's right end (RPOPLPUSH), so a task pushed there last is taken first.
func TestLinePassKeepsOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	pending := pendingKey(QueueWebhooks)
	if err := rdb.LPush(ctx, pending, "waiting").Err(); err != nil {
		t.Fatal(err)
	}
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	l := newLine(rdb, slog.New(slog.DiscardHandler), newIdleBackoff(nil))
	// Placed out of order, all due: t1 the earliest.
	for i, task := range []string{"t3", "t1", "t4", "t2"} {
		retryTask(t, rdb, task, "retry")
		at := now.Add(-time.Duration(40-10*int(task[1]-'0')) * time.Millisecond)
		if err := l.placeIn(ctx, rdb, task, at).Err(); err != nil {
			t.Fatalf("placing task %d: %v", i, err)
		}
	}
	if moved, _, err := l.pass(ctx); err != nil || moved != 4 {
		t.Fatalf("pass: moved %d, err %v; want 4", moved, err)
	}
	var taken []string
	for range 5 {
		id, err := rdb.RPop(ctx, pending).Result()
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, id)
	}
	if want := []string{"t1", "t2", "t3", "t4", "waiting"}; !slices.Equal(taken, want) {
		t.Errorf("taken in the order %v, want %v", taken, want)
	}
}

// TestLineStalePlace: a place whose task stays active long past it (a run that ended without
// the retry) is dropped, so the Line does not look at it forever.
func TestLineStalePlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	retryTask(t, rdb, "stuck", "active")
	if err := rdb.ZAdd(ctx, lineKey, redis.Z{Score: float64(time.Now().Add(-2 * lineStale).UnixMilli()), Member: "stuck"}).Err(); err != nil {
		t.Fatal(err)
	}
	l := newLine(rdb, slog.New(slog.DiscardHandler), newIdleBackoff(nil))
	moved, next, err := l.pass(ctx)
	if err != nil || moved != 0 || !next.IsZero() {
		t.Fatalf("pass: moved %d, next %s, err %v", moved, next, err)
	}
	if n := rdb.ZCard(ctx, lineKey).Val(); n != 0 {
		t.Errorf("stale place kept")
	}
}

// A Line that never started shuts down at once, and twice.
func TestLineShutdownUnstarted(t *testing.T) {
	t.Parallel()
	l := newLine(redistest.New(t), slog.New(slog.DiscardHandler), newIdleBackoff(nil))
	l.shutdown()
	l.shutdown()
}

// nudge ends a hold in progress.
func TestIdleNudge(t *testing.T) {
	t.Parallel()
	b := newIdleBackoff(nil)
	b.lastWork = time.Now().Add(-time.Hour) // long idle: holds are at their longest
	done := make(chan struct{})
	go func() {
		b.wait(time.Minute)
		close(done)
	}()
	time.Sleep(20 * time.Millisecond)
	b.nudge()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a hold went on after nudge")
	}
	if b.hold(false) != 0 {
		t.Error("nudge did not count as work")
	}
}

// idleSeen records IsIdlePoll's verdict on every Line pass.
type idleSeen struct{ verdicts []bool }

func (h *idleSeen) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *idleSeen) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *idleSeen) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if linePass(cmd) && err == nil { // not the EVALSHA that Script.Run retries as EVAL
			h.verdicts = append(h.verdicts, IsIdlePoll(cmd, err))
		}
		return err
	}
}

// A Line's pass that moves nothing is an idle poll, one that moves a task is work: counts of
// a worker's round trips per job leave the first out (docs/benchmarks.md#the-worker-in-four-round-trips).
func TestLinePassIdlePoll(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	seen := &idleSeen{}
	rdb.AddHook(seen)
	l := newLine(rdb, slog.New(slog.DiscardHandler), newIdleBackoff(nil))
	if _, _, err := l.pass(ctx); err != nil {
		t.Fatal(err)
	}
	retryTask(t, rdb, "due", "retry")
	if err := rdb.ZAdd(ctx, lineKey, redis.Z{Score: float64(time.Now().UnixMilli()), Member: "due"}).Err(); err != nil {
		t.Fatal(err)
	}
	if moved, _, err := l.pass(ctx); err != nil || moved != 1 {
		t.Fatalf("moved %d, err %v", moved, err)
	}
	if len(seen.verdicts) != 2 || !seen.verdicts[0] || seen.verdicts[1] {
		t.Errorf("IsIdlePoll on an empty pass, then a pass that moved a task: %v, want [true false]", seen.verdicts)
	}
}

// The skew is the largest of the last readings: a slow reply, which reads Redis's clock
// behind, does not lower it, and a reading ages out after len(r) more.
func TestSkewReadings(t *testing.T) {
	t.Parallel()
	var s skewReadings
	if got := s.add(3 * time.Millisecond); got != 3*time.Millisecond {
		t.Fatalf("first reading: %v", got)
	}
	if got := s.add(-200 * time.Millisecond); got != 3*time.Millisecond {
		t.Errorf("after a slow reply: %v, want 3ms", got)
	}
	for range len(s.r) - 2 {
		s.add(time.Millisecond)
	}
	if got := s.add(time.Millisecond); got != time.Millisecond {
		t.Errorf("after %d more readings: %v, want 1ms (the 3ms one aged out)", len(s.r), got)
	}
}

// A pass reads the skew: on one machine, Redis's clock and this process's agree within the
// reply's time (and the millisecond Redis's time is cut to).
func TestLinePassReadsSkew(t *testing.T) {
	t.Parallel()
	l := newLine(redistest.New(t), slog.New(slog.DiscardHandler), newIdleBackoff(nil))
	if _, _, err := l.pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(l.skew.Load()); d > time.Millisecond || d < -time.Second {
		t.Errorf("skew %v on one machine", d)
	}
	at := time.Now()
	if got := l.onRedisClock(at); got.Sub(at) != time.Duration(l.skew.Load()) {
		t.Errorf("onRedisClock moved %v by %v, want the skew", at, got.Sub(at))
	}
}
