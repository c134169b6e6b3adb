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
)

type idleBackoff struct {
	mu                            sync.Mutex
	after, dequeueMax, forwardMax time.Duration
	lastWork                      time.Time
	wake                          chan struct{} // closed by nudge: the holds in progress end
	stop                          chan struct{}
	stopOnce                      sync.Once
}

func newIdleBackoff() *idleBackoff {
	return &idleBackoff{after: idleAfter, dequeueMax: idleDequeueHoldMax, forwardMax: idleForwardHoldMax,
		lastWork: time.Now(), wake: make(chan struct{}), stop: make(chan struct{})}
}

// Stop ends every hold at once (the worker is shutting down) and holds nothing from then on.
func (b *idleBackoff) Stop() { b.stopOnce.Do(func() { close(b.stop) }) }

// worked notes that a poll found work: polling is at full speed again.
func (b *idleBackoff) worked() {
	b.mu.Lock()
	b.lastWork = time.Now()
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
// dequeue of an empty queue or forwarder pass with nothing due, or a Line's pass that moved
// no webhook. Counts of a
// worker's round trips per job leave these out (docs/benchmarks.md#the-worker-in-four-round-trips).
func IsIdlePoll(cmd redis.Cmder, err error) bool {
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
			b.wait(b.hold(false))
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
