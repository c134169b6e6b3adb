package jobs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Idle back-off (docs/operations.md#an-idle-worker). asynq looks for work by polling: its
// dispatcher runs a dequeue script per queue every TaskCheckInterval (10 ms here, so that a new
// job starts within milliseconds) and its forwarder moves due retries every
// DelayedTaskCheckInterval (100 ms). Left alone, an idle worker sends a few hundred scripts a
// second. idleBackoff, a hook on the worker's Redis client, holds back the empty answers of
// those scripts once the worker has had nothing to do for a while, so that idle polling slows
// to about one dequeue a second; the first script that finds work ends the back-off at once.
//
// Rather than hold, an idle worker spends that time in blocking waits on its queues' pending
// lists (a BLMOVE of each list onto itself, which leaves the list as it is), from the empty
// dequeue of its first queue (the resolve queue): a task queued after a quiet spell wakes it
// at once, where a hold made it wait up to about a second. The other queues' empty answers are
// then not held.
const (
	// idleAfter is how long after the last work the worker polls at full speed: a client
	// that submits a job, then another as soon as it is done, keeps the worker fast.
	idleAfter = 2 * time.Second
	// idleDequeueHoldMax bounds how long one empty dequeue answer is held (one per queue per
	// poll), and so the extra wait of the first job after a quiet spell.
	idleDequeueHoldMax = 500 * time.Millisecond
	// idleForwardHoldMax bounds the hold of an empty forwarder answer: due retries and parked
	// jobs, whose times asynq keeps in whole seconds, still move within about a second.
	idleForwardHoldMax = 150 * time.Millisecond
	// idleBlock is the timeout of one blocking wait for work (BLMOVE counts whole seconds); a
	// shutdown may wait for it.
	idleBlock = time.Second
)

type idleBackoff struct {
	mu                            sync.Mutex
	after, dequeueMax, forwardMax time.Duration
	lastWork                      time.Time
	wake                          chan struct{} // closed by nudge: the holds in progress end
	stop                          chan struct{}
	stopOnce                      sync.Once

	// rdb and watch, when watch is set (the pending lists of the worker's queues, the first
	// one's dequeue waits): an idle worker waits on them for block rather than holding its
	// dequeues' empty answers. wokeBy is the list whose work ended the last wait, until a
	// dequeue finds work; when that list's own dequeue then finds nothing (its queue is
	// paused, or another worker was first), that empty answer is held, or a paused queue with
	// work would wake the worker over and over. waits are the BLMOVEs in flight, for Drain.
	rdb    redis.UniversalClient
	watch  []string
	block  time.Duration
	wokeBy string
	waits  sync.WaitGroup
}

// newIdleBackoff returns the back-off of a worker on rdb; watch are the pending lists of its
// queues, the first one's dequeue waiting for all (none: plain holds).
func newIdleBackoff(rdb redis.UniversalClient, watch ...string) *idleBackoff {
	return &idleBackoff{after: idleAfter, dequeueMax: idleDequeueHoldMax, forwardMax: idleForwardHoldMax,
		lastWork: time.Now(), wake: make(chan struct{}), stop: make(chan struct{}),
		rdb: rdb, watch: watch, block: idleBlock}
}

func (b *idleBackoff) stopped() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

// await blocks until one of the watched lists holds work, for at most b.block, and returns
// that list ("" when none did). BLMOVE of a list onto itself at the same end takes the last
// element and puts it back where it was, in one step: the list is left as it is, and asynq's
// next dequeue finds the task. Each list is waited on by a BLMOVE of its own (on Cluster the
// lists are on different nodes); the others go on until their timeout, in the background. A
// wait is not cut short by Stop or nudge (a blocking call cannot be), so it is short: Drain
// waits for them at most b.block.
func (b *idleBackoff) await(ctx context.Context) string {
	woke := make(chan string, len(b.watch))
	for _, k := range b.watch {
		b.waits.Go(func() {
			if b.rdb.BLMove(ctx, k, k, "RIGHT", "RIGHT", b.block).Err() != nil {
				k = "" // nothing within the wait, or Redis failed: asynq's next poll will tell
			}
			woke <- k
		})
	}
	for range b.watch {
		if k := <-woke; k != "" {
			return k
		}
	}
	return ""
}

// Drain waits for the blocking waits still in flight (after Stop: at most b.block).
func (b *idleBackoff) Drain() { b.waits.Wait() }

// Stop ends every hold at once (the worker is shutting down) and holds nothing from then on.
func (b *idleBackoff) Stop() { b.stopOnce.Do(func() { close(b.stop) }) }

// worked notes that a poll found work: polling is at full speed again.
func (b *idleBackoff) worked() {
	b.mu.Lock()
	b.lastWork = time.Now()
	b.wokeBy = ""
	b.mu.Unlock()
}

// nudge is worked for work that arrived by another way than asynq's polls (a held-back webhook
// moved to its queue at its place in line): it also ends the holds in progress, so that the
// work is picked up within a poll interval.
func (b *idleBackoff) nudge() {
	b.mu.Lock()
	b.lastWork = time.Now()
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// hold is how long to hold an empty answer of a dequeue (or of the forwarder): nothing while
// the worker was busy within b.after, then a quarter of the quiet time beyond that, up to the
// script's cap.
func (b *idleBackoff) hold(forward bool) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	quiet := time.Since(b.lastWork) - b.after
	if quiet <= 0 {
		return 0
	}
	if forward {
		return min(quiet/4, b.forwardMax)
	}
	return min(quiet/4, b.dequeueMax)
}

func (b *idleBackoff) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	b.mu.Lock()
	wake := b.wake
	b.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake:
	case <-b.stop:
	}
}

// idleWait tells the back-off's blocking wait for work (await) by its command.
func idleWait(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 3 {
		return false
	}
	name, _ := args[0].(string)
	k1, _ := args[1].(string)
	k2, _ := args[2].(string)
	return name == "blmove" && k1 == k2 && strings.HasPrefix(k1, "asynq:{") && strings.HasSuffix(k1, "}:pending")
}

// asynqPoll tells asynq's polling scripts by their keys: the dequeue script's are a queue's
// pending list, paused flag, active list and lease set; the forwarder's a scheduled or retry
// set and the pending list. An asynq upgrade that changes them makes TestIdleBackoff fail.
func asynqPoll(cmd redis.Cmder) (dequeue, forward bool) {
	args := cmd.Args()
	if len(args) < 5 {
		return false, false
	}
	if name, _ := args[0].(string); name != "evalsha" && name != "eval" {
		return false, false
	}
	k1, _ := args[3].(string)
	k2, _ := args[4].(string)
	if !strings.HasPrefix(k1, "asynq:{") {
		return false, false
	}
	switch {
	case strings.HasSuffix(k1, ":pending") && strings.HasSuffix(k2, ":paused"):
		return true, false
	case (strings.HasSuffix(k1, ":scheduled") || strings.HasSuffix(k1, ":retry")) && strings.HasSuffix(k2, ":pending"):
		return false, true
	}
	return false, false
}

// IsIdlePoll reports whether cmd, run with the outcome err (in a go-redis hook, the error the
// next hook returned: cmd.Err() is not yet set there), was a poll that found nothing: asynq's
// dequeue of an empty queue or forwarder pass with nothing due, a Line's pass that moved
// no webhook, or an idle worker's blocking wait for work (whatever its outcome: it is the
// waiting, and the dequeue after it counts as the job's). Counts of a
// worker's round trips per job leave these out (docs/benchmarks.md#the-worker-in-four-round-trips).
func IsIdlePoll(cmd redis.Cmder, err error) bool {
	if idleWait(cmd) {
		return true
	}
	if linePass(cmd) {
		return err == nil && lineMovedNone(cmd)
	}
	dequeue, forward := asynqPoll(cmd)
	switch {
	case dequeue:
		return errors.Is(err, redis.Nil)
	case forward && err == nil:
		return movedNone(cmd)
	}
	return false
}

// linePass tells a pass of a Line (places in line of held-back webhooks) by its first key.
func linePass(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 4 {
		return false
	}
	if name, _ := args[0].(string); name != "evalsha" && name != "eval" {
		return false
	}
	k1, _ := args[3].(string)
	return k1 == lineKey
}

// lineMovedNone reports whether a Line's pass moved no task.
func lineMovedNone(cmd redis.Cmder) bool {
	c, ok := cmd.(*redis.Cmd)
	if !ok {
		return false
	}
	v, err := c.Int64Slice()
	return err == nil && len(v) > 0 && v[0] == 0
}

// movedNone reports whether a forwarder pass moved no task.
func movedNone(cmd redis.Cmder) bool {
	c, ok := cmd.(*redis.Cmd)
	if !ok {
		return false
	}
	n, err := c.Int64()
	return err == nil && n == 0
}

// DialHook implements redis.Hook.
func (b *idleBackoff) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook implements redis.Hook; asynq's polls are single commands.
func (b *idleBackoff) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook implements redis.Hook. The hold comes after the command, with its connection
// back in the pool: a held poll occupies only asynq's polling goroutine, as its own sleep
// between polls does.
func (b *idleBackoff) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		dequeue, forward := asynqPoll(cmd)
		err := next(ctx, cmd)
		switch {
		case dequeue && errors.Is(err, redis.Nil):
			err = b.idle(ctx, cmd, next, err)
		case dequeue && err == nil:
			b.worked()
		case forward && err == nil:
			if movedNone(cmd) {
				b.wait(b.hold(true))
			} else {
				b.worked()
			}
		}
		return err
	}
}

// idle handles an empty dequeue answer (err): held, or, with watched lists, the first queue's
// dequeue waits on all of them and runs again when work arrived on its own; the answer asynq
// gets is returned. Work on another queue's list ends the wait too: asynq's dequeue of that
// queue, in this round or the next (5-15 ms on), finds it.
func (b *idleBackoff) idle(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook, err error) error {
	h := b.hold(false)
	own, _ := cmd.Args()[3].(string)
	b.mu.Lock()
	woke := b.wokeBy
	if woke == own {
		b.wokeBy = "" // the work that woke the last wait is not to be had: hold this once
	}
	b.mu.Unlock()
	if len(b.watch) == 0 || h <= 0 || woke == own || b.stopped() {
		b.wait(h)
		return err
	}
	if woke != "" || own != b.watch[0] {
		// Another queue's dequeue is to find the work that woke the last wait; or this is not
		// the first queue, whose dequeue waits for every queue.
		return err
	}
	k := b.await(ctx)
	if k == "" {
		return err
	}
	b.mu.Lock()
	b.wokeBy = k
	b.mu.Unlock()
	if k != own {
		return err
	}
	if err = next(ctx, cmd); err == nil {
		b.worked()
	}
	return err
}
