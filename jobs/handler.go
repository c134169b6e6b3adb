package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// Resolver resolves one link; *resolve.Service in production.
type Resolver interface {
	// Resolve resolves rawURL, or returns a *resolve.Parked when a provider's countdown is
	// better waited out off the worker slot.
	Resolve(ctx context.Context, rawURL string) (resolve.Result, error)
	// Resume finishes what Resolve parked.
	Resume(ctx context.Context, rawURL string, c *resolve.Continuation) (resolve.Result, error)
}

// TerminalFunc is called after a job became terminal (and again if the task is retried after
// that), for example to queue its webhook delivery. It must be idempotent.
type TerminalFunc func(ctx context.Context, r Record) error

// ResolveHandler runs TypeResolve tasks.
type ResolveHandler struct {
	Store      *Store
	Resolver   Resolver
	Logger     *slog.Logger
	OnTerminal TerminalFunc
	// MaxAttempts is RESOLVE_MAX_ATTEMPTS: tries for transient provider failures.
	MaxAttempts int
	// Observe, when set, is told each finished job and how long its last run took (metrics).
	Observe func(r Record, d time.Duration)
	// Leases, when set, holds a lease on each running job (JOB_LEASE_TTL), so that a job whose
	// worker dies is queued again by a reaper within seconds rather than by asynq's recoverer
	// a minute or two later; register Reap with Leases.OnLapse.
	Leases *Leases
	// Tasks are the options of the tasks that Reap queues (RESOLVE_* as in Submit).
	Tasks TaskOptions
	// Complete, when set (Worker.Completions), lets the last write of a job without a webhook
	// complete its asynq task too, one round trip fewer (docs/operations.md#a-job-in-three-round-trips).
	// Leave it nil when the run is followed by anything that can fail it, such as Replicated
	// with REDIS_MIN_REPLICAS_ACK on.
	Complete *TaskCompletions

	requeue     *asynq.Client
	requeueOnce sync.Once
	// markAfter replaces runningAfter when set (tests).
	markAfter time.Duration
}

// droppedRun is logged by a run that finds it no longer owns its job (its worker was stopped
// or cut off past its lease, and a replacement took the job) or that the job ended meanwhile.
const droppedRun = "the job was finished or taken over by another run; this run's outcome is dropped"

// retryError asks asynq to run the task again after delay without marking the job failed.
// lined: a webhook task with a place in the Line at that time, which brings it back then.
type retryError struct {
	err   error
	delay time.Duration
	lined bool
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// HeldError reschedules a task after Delay without counting a failed attempt: the work was
// not tried (a provider's politeness cap, a webhook's rate limit). The worker's IsFailure
// says false for it, so asynq spends no retry.
type HeldError struct {
	Delay time.Duration
}

func (e *HeldError) Error() string { return "held back; retry in " + e.Delay.String() }

// IsHeld reports whether err is a *HeldError.
func IsHeld(err error) bool {
	var h *HeldError
	return errors.As(err, &h)
}

// RetryDelay is the asynq RetryDelayFunc for resolve tasks: a provider's Retry-After when it
// gave one, else base × 4^(n−1) with jitter (RESOLVE_BACKOFF_BASE in docs/configuration.md#variables).
func RetryDelay(base time.Duration) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		var re *retryError
		if errors.As(err, &re) && re.delay > 0 {
			return re.delay
		}
		var he *HeldError
		if errors.As(err, &he) {
			return max(he.Delay, 100*time.Millisecond)
		}
		// asynq passes the retries done so far (0 before the first retry).
		return resolve.Backoff(base, n+1)
	}
}

// upstreamer is a Resolver whose resolves the handler takes in steps (*resolve.Service), so
// that their Redis calls share the handler's own round trips.
type upstreamer interface {
	Upstream(ctx context.Context, rawURL string) (*resolve.Upstream, error)
}

// runningAfter is how long a job's resolve runs before its record is marked running. Most
// resolves (a cached link, a shortener's one redirect) end well within it, and their job then
// goes from queued to done or failed in one record write instead of two, a round trip fewer;
// a client polling a longer resolve still sees it running, this late
// (docs/api.md#get-v1jobsjob_id).
const runningAfter = 100 * time.Millisecond

// ProcessTask implements asynq.Handler. With a *resolve.Service as its Resolver and the link's
// URL in the task, a job that resolves within runningAfter costs two round trips of its own
// besides asynq's dequeue and completion (docs/benchmarks.md#the-worker-in-four-round-trips):
// the lease with the record's read, the cache read and the upstream lock; the outcome
// published with the record finished, and with Complete, asynq's completion in the same write
// (docs/operations.md#a-job-in-three-round-trips). A longer resolve adds the record marked running, from a
// timer while it runs; a task without the URL (queued by an earlier version) adds a round
// trip for the cache read and the lock.
func (h *ResolveHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	growStack()
	return h.process(ctx, t)
}

// process is ProcessTask's work, on the stack growStack made.
func (h *ResolveHandler) process(ctx context.Context, t *asynq.Task) error {
	var p ResolvePayload
	if err := recjson.Unmarshal(t.Payload(), &p); err != nil || p.JobID == "" || p.KeyID == "" {
		return fmt.Errorf("jobs: bad resolve payload %q: %w", t.Payload(), asynq.SkipRetry)
	}
	log := h.Logger.With("job_id", p.JobID, "key_id", p.KeyID)
	// The run's span, in the trace of the request that created the job (docs/operations.md#tracing);
	// the resolve adds a span per hop under it, and the webhook task carries it on.
	ctx, span := tracing.Tracer().Start(tracing.Extract(ctx, p.Trace), "resolve job",
		trace.WithAttributes(attribute.String("linkhop.job_id", p.JobID)))
	defer span.End()
	start := time.Now()
	task := taskIDOf(ctx, p.JobID)

	// Upstream locks this run takes name its worker process, so that a waiter on another
	// worker can take over the lock of a worker that died.
	lctx := ctx
	if h.Leases != nil {
		lctx = resolve.WithLockHolder(ctx, h.Leases)
	}
	svc, stepwise := h.Resolver.(upstreamer)
	var up *resolve.Upstream
	if stepwise && p.URL != "" {
		// nil when the URL is refused before any fetch: the resolve below says so.
		up, _ = svc.Upstream(lctx, p.URL)
	}

	// Round trip 1: the lease and the record, with the cache read and the upstream lock when
	// the task names the link. The lease is in Redis before anything a reaper would have to
	// redo. rctx ends when the lease is lost: the resolve then stops, and this run leaves the
	// job to the run that replaced it. The lock is taken before the record says whether this
	// run has anything to do; when it has not, the lock is given back below.
	var (
		take   func() (*Lease, context.Context, error)
		read   func() (Snapshot, error)
		lookup func() (resolve.Result, bool, bool, error)
	)
	_, _ = h.Store.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		if h.Leases != nil {
			take = h.Leases.TakeIn(ctx, pl, LeaseRef{Kind: LeaseResolve, KeyID: p.KeyID, JobID: p.JobID, Task: task})
		}
		read = h.Store.GetIn(ctx, pl, p.KeyID, p.JobID)
		if up != nil {
			lookup = up.LookupIn(ctx, pl)
			up.LockIn(ctx, pl)
		}
		return nil
	})
	rctx := lctx
	var lease *Lease
	if take != nil {
		var err error
		lease, rctx, err = take()
		if err != nil {
			release(ctx, up)
			return err
		}
		defer h.Leases.Release(lease)
		rctx = resolve.WithLockHolder(rctx, h.Leases)
	}
	snap, err := read()
	if err == nil && p.URL != "" && snap.URL != p.URL {
		// Not expected (a record's url never changes), but the record is the truth: its own
		// link is looked up below, as for a task without a URL.
		release(ctx, up)
		up, lookup, p.URL = nil, nil, ""
	}
	if err != nil || snap.Status.Terminal() || !owns(&snap.Record, task) {
		release(ctx, up)
	}
	if errors.Is(err, ErrNotFound) {
		// Expired, or the submit was undone after a failed enqueue: nothing to do.
		log.Warn("resolve task for a missing job")
		return fmt.Errorf("jobs: job %s: %w", p.JobID, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	if snap.Status.Terminal() {
		// A redelivered task (at-least-once): finish only what may not have happened.
		return h.terminal(ctx, snap.Record)
	}
	if !owns(&snap.Record, task) {
		// A task a reaper replaced (its worker's lease lapsed), handed back by asynq's own
		// recovery or run by a worker that was stopped meanwhile: the replacement owns the
		// job, so this run ends quietly (no retry, no failure in the queue's statistics).
		log.Info("resolve task replaced after its lease lapsed; nothing to do", "task", task)
		return nil
	}
	if stepwise && p.URL == "" {
		// A task without the link's URL: the cache read and the lock in a round trip of their own.
		if up, err = svc.Upstream(lctx, snap.URL); err != nil {
			up = nil // refused before any fetch: the resolve below says so
		} else {
			// Each command's error is read from its own reply (a cache miss is one).
			_, _ = h.Store.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
				lookup = up.LookupIn(ctx, pl)
				up.LockIn(ctx, pl)
				return nil
			})
		}
	}

	// The record is marked running only if the resolve is still going after runningAfter;
	// rec is the record as the last write left it, the base of the commit below.
	mark := h.markRunning(ctx, snap, task)
	defer mark.settle()
	res, rerr := h.resolve(rctx, up, lookup, snap.Record)
	rec := mark.settle()
	mine := true
	// Whatever happens below, an upstream outcome is published (waiters on other workers
	// expect it, and the lock must go); the record's last write normally carries it.
	defer h.publish(ctx, up, res, rerr)
	if lease.Lost() {
		log.Warn(droppedRun, "reason", "lease lost")
		return nil
	}
	var re *resolve.Error
	if pk, ok := resolve.IsParked(rerr); ok {
		// A provider's countdown (docs/resolving.md#adlinkfly): the walk's state goes on the
		// record and the task comes back when the countdown is over, leaving the worker slot
		// to other jobs meanwhile. No attempt is spent. The lease ends with this run, so a
		// parked job (running, its task waiting in asynq's retry set, held by no worker) is
		// never reaped.
		if _, err := h.commit(ctx, up, rec, res, rerr, func(r *Record) error {
			mine = owns(r, task)
			if r.Status.Terminal() || !mine {
				return ErrNoChange
			}
			r.Status = StatusRunning // a parked job reads running, however soon it parked
			r.Resume = pk.State
			return nil
		}); err != nil {
			return err
		}
		if !mine {
			log.Warn(droppedRun)
			return nil
		}
		log.Debug("resolve parked for a provider countdown", "until", pk.Until)
		return &HeldError{Delay: max(time.Until(pk.Until), 0)}
	}
	switch {
	case rerr == nil:
	case errors.As(rerr, &re):
		if re.Throttled {
			// Nothing was sent to the provider (its politeness cap was full): try again
			// later without spending one of the job's attempts.
			return &HeldError{Delay: re.RetryAfter}
		}
		if re.Transient {
			// Attempts are counted on the record, not by asynq: held-back runs (above) and
			// infrastructure errors (below) must not use up the provider's attempts.
			rec, err = h.commit(ctx, up, rec, res, rerr, func(r *Record) error {
				mine = owns(r, task)
				if r.Status.Terminal() || !mine {
					return ErrNoChange
				}
				r.Status = StatusRunning // waiting for its next attempt
				r.Attempts++
				r.Resume = nil // a retry starts the walk afresh: the provider's session may be gone
				return nil
			})
			if err != nil {
				return err
			}
			if rec.Status.Terminal() || !mine {
				log.Warn(droppedRun)
				return nil
			}
			if rec.Attempts < h.MaxAttempts {
				log.Info("transient resolve failure; retrying", "attempt", rec.Attempts, "detail", re.Detail)
				return &retryError{err: rerr, delay: re.RetryAfter}
			}
		}
	default:
		// Not a verdict on the link (Redis down, shutdown): let asynq retry the task; the job
		// stays running and is picked up again.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		if retried < maxRetry {
			return rerr
		}
		re = &resolve.Error{Code: resolve.CodeResolveFailed, Detail: "internal error while resolving"}
		log.Error("resolve failed with an internal error", "err", rerr)
	}

	// The last round trip: the outcome published and the record finished, in one pipeline,
	// with the task's completion when nothing can fail the run after it (a job without a
	// webhook to queue; Complete says whether anything follows the run).
	finished := false
	var td *taskDone
	if rec.WebhookURL == "" {
		td = h.Complete.task(ctx)
	}
	rec, completed, err := h.commitCompleting(ctx, up, rec, res, rerr, td, func(r *Record) error {
		// Applied again when the record changed meanwhile: the last application decides.
		finished = false
		// The fence: a run whose task was replaced meanwhile (its worker was stopped past the
		// lease, then resumed) must not finish the job a second time.
		if r.Status.Terminal() || !owns(r, task) {
			return ErrNoChange
		}
		finish(r, res, re)
		finished = true
		return nil
	})
	if err != nil {
		return err
	}
	if completed {
		// asynq's own completion of the task, which follows this run, is answered here.
		td.completed()
	}
	if !finished {
		log.Warn(droppedRun)
		if rec.Status.Terminal() {
			return h.terminal(ctx, rec.Record)
		}
		return nil
	}
	if h.Observe != nil {
		h.Observe(rec.Record, time.Since(start))
	}
	span.SetAttributes(attribute.String("linkhop.job.status", string(rec.Status)))
	log.Info("job finished", "status", rec.Status, "hops", len(rec.Hops))
	if err := h.terminal(ctx, rec.Record); err != nil {
		if completed {
			// Not expected (a job without a webhook has nothing to queue), and the task is
			// gone: an error would make asynq retry a task it no longer has.
			log.Error("after the job finished", "err", err)
			return nil
		}
		return err
	}
	return nil
}

// resolve resolves rec's link: from the cache read made with the record's when it answered,
// else upstream (resuming a parked walk when there is one). A resumed walk holds the link's
// upstream lock when LockIn took it (other jobs of the link then wait for its outcome, and
// PublishIn releases it); when another run holds the lock, it resumes without, as
// Service.Resume does.
func (h *ResolveHandler) resolve(ctx context.Context, up *resolve.Upstream, lookup func() (resolve.Result, bool, bool, error), rec Record) (resolve.Result, error) {
	if up == nil {
		if rec.Resume != nil {
			return h.Resolver.Resume(ctx, rec.URL, rec.Resume)
		}
		return h.Resolver.Resolve(ctx, rec.URL)
	}
	res, found, removed, err := lookup()
	switch {
	case err != nil:
		up.Release(ctx)
		return resolve.Result{}, err
	case found:
		up.Release(ctx)
		return res, nil
	case removed:
		up.Release(ctx)
		return resolve.Result{}, up.Removed()
	case rec.Resume != nil:
		return up.Resume(ctx, rec.Resume)
	}
	return up.Resolve(ctx)
}

// release gives back the upstream lock that round trip 1 took, when it took it, for a run
// that has nothing to resolve.
func release(ctx context.Context, up *resolve.Upstream) {
	if up != nil {
		up.Release(ctx)
	}
}

// marker marks a queued job running from a timer, once its resolve has run for runningAfter,
// and hands the run's commit the record as that write left it. The mutex is held across the
// write, so that a commit never starts from a record the marking is about to change: settle
// waits for a write in flight, and after settle no write starts.
type marker struct {
	mu    sync.Mutex
	snap  Snapshot
	done  bool
	timer *time.Timer
}

// markRunning arms the marking of the job read as snap, if it is queued.
func (h *ResolveHandler) markRunning(ctx context.Context, snap Snapshot, task string) *marker {
	m := &marker{snap: snap}
	if snap.Status != StatusQueued {
		return m // already running: a retry, a resumed walk, a replacement task
	}
	after := runningAfter
	if h.markAfter > 0 {
		after = h.markAfter
	}
	m.timer = time.AfterFunc(after, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.done {
			return
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		next, err := h.Store.UpdateFrom(wctx, m.snap, func(r *Record) error {
			// The same fences as the commit's: a job cancelled, finished or taken over
			// meanwhile is left as it is (the commit then finds it so).
			if r.Status != StatusQueued || !owns(r, task) {
				return ErrNoChange
			}
			r.Status = StatusRunning
			return nil
		})
		if err != nil {
			// The commit's compare-and-set finds out what happened (a conflict is re-read).
			h.Logger.Debug("marking the job running failed", "job_id", snap.ID, "err", err)
			return
		}
		m.snap = next
	})
	return m
}

// settle stops the marking (waiting for a write in flight) and returns the record as the run
// last read or wrote it. It may be called more than once.
func (m *marker) settle() Snapshot {
	if m.timer != nil {
		m.timer.Stop()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = true
	return m.snap
}

// commit applies fn to the record from cur and publishes the upstream outcome (when this run
// resolved upstream and has not published it yet) in the same round trip. The outcome is
// written even when ctx has ended: other workers wait for it.
func (h *ResolveHandler) commit(ctx context.Context, up *resolve.Upstream, cur Snapshot, res resolve.Result, rerr error, fn func(*Record) error) (Snapshot, error) {
	next, _, err := h.commitCompleting(ctx, up, cur, res, rerr, nil, fn)
	return next, err
}

// commitCompleting is commit whose write, when td is set, also completes td's asynq task
// (casDoneScript); completed says it did.
func (h *ResolveHandler) commitCompleting(ctx context.Context, up *resolve.Upstream, cur Snapshot, res resolve.Result, rerr error, td *taskDone, fn func(*Record) error) (next Snapshot, completed bool, err error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var update func() (Snapshot, bool, error)
	published := func() {}
	_, _ = h.Store.rdb.Pipelined(wctx, func(pl redis.Pipeliner) error {
		if up != nil {
			published = up.PublishIn(wctx, pl, res, rerr)
		}
		update = h.Store.updateIn(wctx, pl, cur, fn, td)
		return nil
	})
	published()
	return update()
}

// publish publishes an upstream outcome that no record write carried (a run that ended
// early: its lease lost, held back, or retried for an infrastructure error).
func (h *ResolveHandler) publish(ctx context.Context, up *resolve.Upstream, res resolve.Result, rerr error) {
	if up == nil || !up.Pending() {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var published func()
	_, _ = h.Store.rdb.Pipelined(wctx, func(pl redis.Pipeliner) error {
		published = up.PublishIn(wctx, pl, res, rerr)
		return nil
	})
	published()
}

func (h *ResolveHandler) terminal(ctx context.Context, r Record) error {
	if h.OnTerminal == nil {
		return nil
	}
	return h.OnTerminal(ctx, r)
}

// finish fills the terminal state of r from a resolve result or error.
func finish(r *Record, res resolve.Result, re *resolve.Error) {
	t := now()
	r.CompletedAt = &t
	r.Resume = nil
	if r.WebhookURL != "" {
		r.Webhook = webhooks.NewState(r.WebhookURL, t)
	}
	if re == nil {
		r.Status = StatusDone
		r.TargetURL = &res.TargetURL
		r.Hops = res.Hops
		if res.Provider.ID != "" {
			r.Provider, r.Tier = res.Provider.ID, res.Provider.Tier
		}
		r.CreditsCharged, r.CreditsHeld = r.CreditsHeld, 0
		return
	}
	code, detail := re.Code, re.Detail
	if re.Transient {
		code = resolve.CodeProviderDown
	}
	// Failures cost nothing: the credits held at submission go back.
	r.refund, r.CreditsHeld = r.CreditsHeld, 0
	r.Status = StatusFailed
	if code == resolve.CodeUnsupportedLink {
		r.Status = StatusInvalid
	}
	r.Error, r.ErrorDetail = &code, &detail
	if len(re.Hops) > 0 {
		r.Hops = re.Hops
	}
}
