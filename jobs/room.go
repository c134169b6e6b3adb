package jobs

import (
	"context"
	"sync"
	"time"
)

// Held-back webhook attempts that wait in the worker (docs/webhooks.md#rate-per-webhook-url).
// An attempt that the per-URL rate holds back gets a place in line. Going back through asynq
// to its place costs a second run of its task: a retry write, a move by the Line, a dequeue
// and the reads again, and the task waits in asynq's pending list behind whatever else is
// there. On a worker that runs near its ceiling, that wait makes attempts start after their
// places, which lose them and are held again behind the whole line: more runs, so more late
// starts. A Room lets the run that was held back end its task at once (its worker slot is
// free) while the attempt waits in this process for its place, with its job lease kept: set
// to lapse a JOB_LEASE_TTL after the place and not renewed until then, so that if the process
// dies, a reaper queues the delivery again soon after its place, as for any attempt whose
// worker died. At its place the attempt is made from here, with no task run.

// roomPerSlot sizes a worker's Room: this many waiting attempts per task slot
// (WORKER_CONCURRENCY). A waiting attempt costs its worker a goroutine and a timer, a few
// kilobytes, and Redis nothing while it waits (its job lease is parked until its place,
// Leases.parkIn); attempts beyond the bound go back through asynq.
const roomPerSlot = 100

// roomHorizon bounds how far ahead a place may be for its attempt to wait in the Room: one
// behind a line of hours would hold a place in the Room, and a lease, all that time, which
// attempts due sooner could use; it waits in asynq's retry set instead.
const roomHorizon = time.Minute

// roomLead is how long before its place a waiting attempt starts its round trip, so that the
// rate check sees it within the place's early margin (webhooks' placeEarly), not after it.
const roomLead = 5 * time.Millisecond

// Room holds held-back webhook attempts in this process until their places. Worker makes it and
// shuts it down; WebhookDeps.Room uses it.
type Room struct {
	max   int
	grace time.Duration // how long close lets attempts being made finish before it cuts them short
	// slots bounds the attempts made from the Room at once, as WORKER_CONCURRENCY bounds task
	// runs. An attempt waits for a slot before its rate check, where a wait only costs it its
	// place (it is held again), never after it, where it would delay a send the limiter has
	// already counted and so bring two arrivals at one URL closer than the rate allows.
	slots chan struct{}

	ctx    context.Context // of the attempts made from the Room; canceled when grace runs out
	cancel context.CancelFunc

	mu      sync.Mutex
	n       int
	closed  bool
	stop    chan struct{}
	waiting sync.WaitGroup
}

func newRoom(max, slots int, grace time.Duration) *Room {
	ctx, cancel := context.WithCancel(context.Background())
	return &Room{max: max, grace: grace, slots: make(chan struct{}, slots), ctx: ctx, cancel: cancel, stop: make(chan struct{})}
}

// reserve takes a place in the Room for one attempt, which start must then be called for. It
// reports false when the Room is full or closed (or nil).
func (r *Room) reserve() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.n >= r.max {
		return false
	}
	r.n++
	r.waiting.Add(1)
	return true
}

// unreserve gives back a place that reserve took and start was not called for.
func (r *Room) unreserve() {
	r.mu.Lock()
	r.n--
	r.mu.Unlock()
	r.waiting.Done()
}

// start begins the wait of the attempt reserve made room for: after wait (less roomLead), run
// is called; if the Room is closed first, abandon is called instead, and must hand the attempt
// back to the queue. run's context ends when close has waited grace for it (an attempt
// cut short is handed back too); abandon's does not end.
func (r *Room) start(wait time.Duration, run, abandon func(ctx context.Context)) {
	go func() {
		defer func() {
			r.mu.Lock()
			r.n--
			r.mu.Unlock()
			r.waiting.Done()
		}()
		t := time.NewTimer(max(wait-roomLead, 0))
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.stop:
			abandon(context.WithoutCancel(r.ctx))
			return
		}
		select {
		case r.slots <- struct{}{}:
		case <-r.stop:
			abandon(context.WithoutCancel(r.ctx))
			return
		}
		defer func() { <-r.slots }()
		run(r.ctx)
	}()
}

// close hands every waiting attempt back (abandon) and lets those being made finish, for up to
// grace (SHUTDOWN_TIMEOUT, the time asynq gives its runs; both count from now), then cuts them
// short. The channel closes when the last has ended. Attempts held back from then on wait in
// asynq's retry set.
func (r *Room) close() <-chan struct{} {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ended := make(chan struct{})
		go func() {
			r.waiting.Wait()
			close(ended)
		}()
		t := time.NewTimer(r.grace)
		defer t.Stop()
		select {
		case <-ended:
		case <-t.C:
			r.cancel()
			<-ended
		}
		r.cancel()
	}()
	return done
}
