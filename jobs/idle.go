package jobs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Idle back-off (docs/operations.md#an-idle-worker). asynq looks for work by polling: its
// dispatcher runs a dequeue script per queue, and whenever it finds every queue empty it
// sleeps 5-15 ms (TaskCheckInterval 10 ms) before the next round; its forwarder moves due
// retries every DelayedTaskCheckInterval (100 ms). Left alone, a worker sends a few hundred
// scripts a second, and a job queued while the dispatcher sleeps waits for the sleep to end.
// idleBackoff, a hook on the worker's Redis client, changes both.
//
// When a round of dequeues has found every queue empty, the worker waits for work instead:
// a blocking BLMOVE of each queue's pending list onto itself (which leaves the list as it
// is), for up to a second, at any load. A task queued meanwhile wakes it at once, and the
// dequeue is run again, for the queue whose list woke it, before asynq sees the answer: the
// task starts within a round trip, where it used to wait for asynq's sleep. There is at most
// one BLMOVE in flight per list, shared by the waits that need it (watchList); while it is in
// flight, its list is known to be empty, and a dequeue of it is answered without Redis
// (knownEmpty). A busy worker runs one on a list whose dequeue found it empty while another
// queue had work, with no wait (arm), so that it stops asking for that queue until it has work.
//
// Empty answers of the forwarder are held back once the worker has had nothing to do for a
// while, and so are empty dequeues when a wait cannot help (a wake whose work the dequeue
// then did not get: a paused queue, or another worker was first; or a worker with no list
// to wait on). The first script that finds work ends the back-off at once.
const (
	// idleAfter is how long after the last work the worker's holds are nothing: a client
	// that submits a job, then another as soon as it is done, keeps the worker fast.
	idleAfter = 2 * time.Second
	// idleDequeueHoldMax bounds how long one held empty dequeue answer is held.
	idleDequeueHoldMax = 500 * time.Millisecond
	// idleForwardHoldMax bounds the hold of an empty forwarder answer: due retries and parked
	// jobs, whose times asynq keeps in whole seconds, still move within about a second.
	idleForwardHoldMax = 150 * time.Millisecond
	// idleBlock is the timeout of one wait for work, and of each BLMOVE (which counts whole
	// seconds); a shutdown may wait for the BLMOVEs in flight.
	idleBlock = time.Second
)

type idleBackoff struct {
	mu                            sync.Mutex
	after, dequeueMax, forwardMax time.Duration
	lastWork                      time.Time
	wake                          chan struct{} // closed by nudge: the holds in progress end
	stop                          chan struct{}
	stopOnce                      sync.Once

	// rdb and watch, when watch is set (the pending lists of the worker's queues): a round of
	// dequeues that finds them all empty (empty, reset when work is found or a wait begins)
	// waits on them for block. armed are the lists with a BLMOVE in flight (watchList), and
	// waiters the waits in progress, each told the first list that has work. waits are the
	// BLMOVEs' goroutines, for Drain. filled are the lists whose BLMOVE, started by a busy
	// worker's empty dequeue (arm), ended on a task that no dequeue has taken since, and
	// unwatched until when such a list is not armed again by a busy worker (armBusy).
	rdb       redis.UniversalClient
	watch     []string
	block     time.Duration
	empty     map[string]bool
	armed     map[string]bool
	filled    map[string]bool
	unwatched map[string]time.Time
	waiters   map[chan string]struct{}
	waits     sync.WaitGroup
}

// newIdleBackoff returns the back-off of a worker on rdb; watch are the pending lists of its
// queues (none: empty dequeues are only held).
func newIdleBackoff(rdb redis.UniversalClient, watch ...string) *idleBackoff {
	return &idleBackoff{after: idleAfter, dequeueMax: idleDequeueHoldMax, forwardMax: idleForwardHoldMax,
		lastWork: time.Now(), wake: make(chan struct{}), stop: make(chan struct{}),
		rdb: rdb, watch: watch, block: idleBlock,
		empty: map[string]bool{}, armed: map[string]bool{}, filled: map[string]bool{},
		unwatched: map[string]time.Time{}, waiters: map[chan string]struct{}{}}
}

func (b *idleBackoff) stopped() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

// await blocks until the wait told (registered by join) is told that a watched list holds
// work, for at most d, and returns that list ("" when none did, or the worker is stopping).
func (b *idleBackoff) await(told chan string, d time.Duration) string {
	t := time.NewTimer(d)
	defer t.Stop()
	var k string
	select {
	case k = <-told:
	case <-t.C:
	case <-b.stop:
	}
	b.mu.Lock()
	delete(b.waiters, told)
	b.mu.Unlock()
	return k
}

// join (b.mu held) registers a wait and starts a BLMOVE on each list that has none in flight
// (watchList). BLMOVE of a list onto itself at the same end takes the last element and puts it
// back where it was, in one step: the list is left as it is, and a dequeue finds the task.
// Each list has a BLMOVE of its own (on Cluster the lists are on different nodes). Joining
// under the same hold of b.mu as the test of armed (idle) is what makes a list with a BLMOVE
// in flight as good as found empty: a task on it is told to the wait.
func (b *idleBackoff) join() chan string {
	told := make(chan string, 1)
	b.waiters[told] = struct{}{}
	for _, k := range b.watch {
		b.arm(k)
	}
	return told
}

// arm (b.mu held) starts a BLMOVE on list k unless one is in flight. A busy worker arms a
// list whose dequeue found it empty while other queues have work, with no wait to tell: until
// a task arrives on it (or the BLMOVE's second is up), its dequeues are answered without Redis
// (knownEmpty). asynq dequeues one task at a time, trying its queues in turn, so a busy worker
// otherwise asks Redis for the empty queue before many of its tasks (an idle poll, but a round
// trip each on asynq's one dequeuing goroutine; docs/operations.md#an-idle-worker).
func (b *idleBackoff) arm(k string) {
	if !b.armed[k] {
		b.armed[k] = true
		b.waits.Go(func() { b.watchList(k) })
	}
}

// armBusy (b.mu held) arms list k after a busy worker's empty dequeue of it, unless the list's
// last such BLMOVE ended on a task that this dequeue still did not get: the queue holds tasks it
// does not give out (asynqmon paused it), so a BLMOVE would end at once, one more round trip
// for each dequeue. Such a list is left unwatched for b.block, its dequeues asked of Redis as
// they were before there was arm.
func (b *idleBackoff) armBusy(k string) {
	now := time.Now()
	switch {
	case b.filled[k]:
		delete(b.filled, k)
		b.unwatched[k] = now.Add(b.block)
	case now.After(b.unwatched[k]):
		b.arm(k)
	}
}

// knownEmpty reports whether the list of dequeue cmd has a BLMOVE in flight: the list was
// empty when it was sent, and a task queued since has ended it or will, which tells every wait
// registered by then (watchList). Such a dequeue is answered "nothing" without Redis (asynq's
// round goes on with its other queues, and a wait begins when they are empty too), which
// spares an empty dequeue script in most rounds of a busy worker: the other queue's list
// usually has a wait's BLMOVE in flight.
func (b *idleBackoff) knownEmpty(cmd redis.Cmder) bool {
	if _, ok := cmd.(*redis.Cmd); !ok || b.stopped() {
		return false
	}
	own, _ := cmd.Args()[3].(string)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.armed[own]
}

// watchList runs BLMOVEs on list k while waits need them, and tells every wait in progress
// when k holds work (the wait is then over). A BLMOVE is not cut short by a wait's end, Stop
// or nudge (a blocking call cannot be), so it is short: Drain waits for it at most b.block; the
// next wait shares it rather than start another. A Redis error ends it: the wait then ends at
// its timeout, and asynq's next dequeue meets the error.
func (b *idleBackoff) watchList(k string) {
	for {
		// go-redis sends whole seconds, and 0 would block for ever.
		err := b.rdb.BLMove(context.Background(), k, k, "RIGHT", "RIGHT", max(b.block, time.Second)).Err()
		b.mu.Lock()
		if err == nil {
			if len(b.waiters) == 0 {
				b.filled[k] = true
			}
			for w := range b.waiters {
				w <- k // room for one: each wait is told once, and leaves the set here
				delete(b.waiters, w)
			}
		}
		if len(b.waiters) == 0 || b.stopped() || (err != nil && !errors.Is(err, redis.Nil)) {
			b.armed[k] = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
	}
}

// Drain waits for the blocking waits still in flight (after Stop: at most b.block).
func (b *idleBackoff) Drain() { b.waits.Wait() }

// Stop ends every hold at once (the worker is shutting down) and holds nothing from then on.
func (b *idleBackoff) Stop() { b.stopOnce.Do(func() { close(b.stop) }) }

// worked notes that a poll found work: polling is at full speed again. list is the pending
// list a dequeue took a task from ("" for other work).
func (b *idleBackoff) worked(list string) {
	b.mu.Lock()
	b.lastWork = time.Now()
	clear(b.empty)
	delete(b.filled, list)
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

// idleWait tells the back-off's blocking wait for work (watchList's BLMOVE) by its command.
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
// no webhook, or a worker's blocking wait for work (whatever its outcome: it is the waiting,
// and the dequeue after it counts as the job's). A dequeue the worker answered itself is not
// a poll (AnsweredWithoutRedis). Counts of a worker's round trips per job leave these out
// (docs/benchmarks.md#the-worker-in-four-round-trips).
func IsIdlePoll(cmd redis.Cmder, err error) bool {
	if AnsweredWithoutRedis(cmd) {
		return false // not a call at all
	}
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
		if dequeue && b.knownEmpty(cmd) {
			c := cmd.(*redis.Cmd) // knownEmpty checked
			c.SetVal(answeredHere)
			c.SetErr(redis.Nil)
			return b.idle(ctx, cmd, next, redis.Nil)
		}
		err := next(ctx, cmd)
		switch {
		case dequeue && errors.Is(err, redis.Nil):
			err = b.idle(ctx, cmd, next, err)
		case dequeue && err == nil:
			own, _ := cmd.Args()[3].(string)
			b.worked(own)
		case forward && err == nil:
			if movedNone(cmd) {
				b.wait(b.hold(true))
			} else {
				b.worked("")
			}
		}
		return err
	}
}

// idle handles an empty dequeue answer (err) and returns the answer asynq gets. The dequeue
// that completes a round of empty ones (every watched list found empty since work was last
// found, or known empty: a BLMOVE in flight) waits for work; when a list then holds work, the
// dequeue is run again for that list's queue, in place of this one's if it is another
// (asynq's dequeue takes a task's queue from the task, not from the call). When that finds
// nothing, the answer is held, or a paused queue with work would wake the worker over and
// over.
func (b *idleBackoff) idle(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook, err error) error {
	own, _ := cmd.Args()[3].(string)
	if len(b.watch) == 0 || b.stopped() || !slices.Contains(b.watch, own) {
		b.wait(b.hold(false))
		return err
	}
	b.mu.Lock()
	b.empty[own] = true
	round := true
	for _, l := range b.watch {
		if !b.empty[l] && !b.armed[l] {
			round = false
		}
	}
	var told chan string
	if round {
		clear(b.empty)
		told = b.join()
	} else {
		b.armBusy(own)
	}
	b.mu.Unlock()
	if !round {
		return err // the next queue's dequeue, in this round or the next
	}
	k := b.await(told, b.block)
	if k == "" {
		return err
	}
	if k == own {
		err = next(ctx, cmd)
	} else {
		err = dequeueOf(ctx, cmd, k, next)
	}
	switch {
	case err == nil:
		b.worked(k)
	case errors.Is(err, redis.Nil):
		b.wait(b.hold(false))
	}
	return err
}

// answeredHere is the value of a dequeue that the back-off answered itself, without Redis
// (knownEmpty); asynq reads only its error, redis.Nil.
var answeredHere = &struct{ what string }{"an empty dequeue answered by the idle back-off"}

// AnsweredWithoutRedis reports whether the worker answered cmd without sending it: an asynq
// dequeue answered "nothing", its queue's list having a wait for work in flight (so being
// empty), or asynq's completion of a task that its job's last write completed
// (TaskCompletions). Counts of a worker's Redis calls leave it out
// (docs/operations.md#an-idle-worker).
func AnsweredWithoutRedis(cmd redis.Cmder) bool {
	c, ok := cmd.(*redis.Cmd)
	return ok && (c.Val() == any(answeredHere) || c.Val() == any(completedHere))
}

// dequeueOf runs asynq's dequeue script cmd (of one queue) for the queue of pending list k
// instead, and gives cmd its answer. The script's keys and its task key prefix are the queue's
// ("asynq:{name}:…"); asynqPoll's test of the layout (TestIdleBackoff) fails if asynq changes it.
func dequeueOf(ctx context.Context, cmd redis.Cmder, k string, next redis.ProcessHook) error {
	c, ok := cmd.(*redis.Cmd)
	own, _ := cmd.Args()[3].(string)
	from, to := strings.TrimSuffix(own, "pending"), strings.TrimSuffix(k, "pending")
	if !ok || from == own || to == k {
		return redis.Nil // not asynq's dequeue as we know it: asynq's next round finds the task
	}
	args := slices.Clone(cmd.Args())
	for i := 3; i < len(args); i++ {
		if a, isStr := args[i].(string); isStr && strings.HasPrefix(a, from) {
			args[i] = to + strings.TrimPrefix(a, from)
		}
	}
	other := redis.NewCmd(ctx, args...)
	err := next(ctx, other)
	c.SetVal(other.Val())
	c.SetErr(other.Err())
	return err
}
