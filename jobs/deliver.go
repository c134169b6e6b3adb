package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	neturl "net/url"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// TypeWebhook is the asynq task type that delivers one job's webhook event.
const TypeWebhook = "webhook:deliver"

// QueueWebhooks is the asynq queue of webhook deliveries, apart from resolves so that the
// two kinds of work can be weighed and watched separately.
const QueueWebhooks = "webhooks"

// notDueSlack is how early a task may start its attempt: below the forwarder's granularity,
// so that a task is not bounced back for a few milliseconds of clock difference.
const notDueSlack = 20 * time.Millisecond

// placedBackstop is how long after its place asynq's retry brings back a held-back task that
// no Line moved (every worker stopped meanwhile): it will have lost its place by then and asks
// afresh.
const placedBackstop = time.Second

// webhookTaskSpare is how many asynq retries a delivery task has beyond the policy's own:
// attempts are counted in the job's webhook state, but errors that are not attempts (Redis
// unreachable) also use up asynq retries, and asynq must not archive a delivery for those
// while the policy still has attempts to make.
const webhookTaskSpare = 20

// WebhookPayload is the payload of a TypeWebhook task: ids, the delivery generation it
// belongs to (1 for the first delivery, +1 per redelivery) and the URL it delivers to.
type WebhookPayload struct {
	JobID      string `json:"job_id"`
	KeyID      string `json:"key_id"`
	Generation int    `json:"generation"`
	// URL is the webhook URL of the generation, so that an attempt's rate check goes out with
	// the reads of its job and key instead of after them (WebhookHandler). Empty in the tasks
	// of earlier versions, which check after the reads.
	URL string `json:"url,omitempty"`
	// Trace is the trace context of the job's resolve, when tracing is on.
	Trace map[string]string `json:"trace,omitempty"`
}

// NewWebhookTask builds the delivery task of generation gen of job jobID to url. Its TaskID
// names job and generation, so one generation is queued at most once at a time; its timeout
// stays above the policy's attempt timeout, so asynq never starts a second run of a delivery
// while the first is still inside its HTTP request.
func NewWebhookTask(jobID, keyID, url string, gen int, p webhooks.Policy) (*asynq.Task, error) {
	return newWebhookTask(context.Background(), jobID, keyID, url, gen, p)
}

// newWebhookTask is NewWebhookTask carrying the trace context of ctx.
func newWebhookTask(ctx context.Context, jobID, keyID, url string, gen int, p webhooks.Policy) (*asynq.Task, error) {
	b, err := recjson.Marshal(WebhookPayload{JobID: jobID, KeyID: keyID, Generation: gen, URL: url, Trace: tracing.Inject(ctx)})
	if err != nil {
		return nil, fmt.Errorf("jobs: encoding webhook payload: %w", err)
	}
	return asynq.NewTask(TypeWebhook, b,
		asynq.TaskID(webhookTaskID(jobID, gen)),
		asynq.Queue(QueueWebhooks),
		asynq.MaxRetry(p.Retries()+webhookTaskSpare),
		asynq.Timeout(p.TaskTimeout()),
	), nil
}

// webhookTaskID is the id of NewWebhookTask's task of generation gen of job jobID.
func webhookTaskID(jobID string, gen int) string { return "webhook:" + jobID + ":" + strconv.Itoa(gen) }

// deliveryOwner is the task that delivers the current generation of r's webhook: its own
// task until a reaper replaced it.
func deliveryOwner(r *Record) string {
	if r.WebhookTask != "" {
		return r.WebhookTask
	}
	return webhookTaskID(r.ID, r.Webhook.CurrentGeneration())
}

// enqueueWebhook queues generation gen of job jobID, to url. A task of that generation already
// in a queue counts as success: callers (a re-run resolve task) may ask twice. opts override
// the task's (a reaper's replacement id and start time).
func enqueueWebhook(ctx context.Context, c *asynq.Client, jobID, keyID, url string, gen int, p webhooks.Policy, opts ...asynq.Option) error {
	task, err := newWebhookTask(ctx, jobID, keyID, url, gen, p)
	if err != nil {
		return err
	}
	if _, err := c.EnqueueContext(ctx, task, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("jobs: enqueueing webhook of %s: %w", jobID, err)
	}
	return nil
}

// stuckAfter is how long past its next_attempt_at a pending delivery must be before a
// redelivery may replace it. A live delivery is never that late (retries are forwarded within
// 100 ms, held-back attempts within a second or two); one that is has lost its task (asynq
// archived it after a long Redis outage), and refusing with 409 forever would leave the user
// no way out. Replacing a delivery that was only slow is harmless: its task belongs to an
// older generation and does nothing.
const stuckAfter = 15 * time.Minute

func stuck(st *webhooks.State) bool {
	return st.NextAttemptAt != nil && time.Since(*st.NextAttemptAt) > stuckAfter
}

// RedeliverWebhook starts a fresh delivery of job jobID's webhook for its owner keyID and
// returns the new webhook state (pending, attempts 0). ErrNotFound when the job does not
// exist or belongs to another key; ErrNoWebhook when it has no webhook_url; ErrWebhookPending
// while a delivery is pending, including before the job has finished (a pending delivery
// more than 15 minutes overdue counts as lost and may be replaced).
func (q *Queue) RedeliverWebhook(ctx context.Context, keyID, jobID string) (webhooks.State, error) {
	var prev webhooks.State
	rec, err := q.store.Update(ctx, keyID, jobID, func(r *Record) error {
		if r.WebhookURL == "" {
			return ErrNoWebhook
		}
		if !r.Status.Terminal() || r.Webhook == nil || (r.Webhook.Pending() && !stuck(r.Webhook)) {
			return ErrWebhookPending
		}
		prev = *r.Webhook
		r.Webhook.Redeliver(now())
		r.WebhookTask = "" // the new generation's own task delivers it
		return nil
	})
	if err != nil {
		return webhooks.State{}, err
	}
	gen := rec.Webhook.Generation
	if err := enqueueWebhook(ctx, q.client, jobID, keyID, rec.Webhook.URL, gen, q.opts.Webhooks); err != nil {
		// Put the state back: a job left "pending" with no task would refuse every later
		// redelivery with 409 and never deliver.
		_, uerr := q.store.Update(context.WithoutCancel(ctx), keyID, jobID, func(r *Record) error {
			if r.Webhook == nil || r.Webhook.Generation != gen {
				return ErrNoChange
			}
			*r.Webhook = prev
			return nil
		})
		if uerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the redelivery: %w", uerr))
		}
		return webhooks.State{}, err
	}
	return *rec.Webhook, nil
}

// WebhookHandler runs TypeWebhook tasks: one attempt per run, paced by the per-URL rate,
// signed with the key's current secrets, recorded in the job's webhook state.
type WebhookHandler struct {
	d      WebhookDeps
	client *asynq.Client
}

// WebhookDeps are what a WebhookHandler delivers with.
type WebhookDeps struct {
	Store   *Store
	Keys    *keys.Store
	Limiter *webhooks.RateLimiter
	Sender  *webhooks.Sender
	Policy  webhooks.Policy
	Metrics *webhooks.Metrics // nil: no metrics
	Logger  *slog.Logger      // nil: no logs
	// Leases, when set, holds a lease on each attempt in flight, so that an attempt whose
	// worker dies is made again within seconds (register Reap with Leases.OnLapse).
	Leases *Leases
	// Line, when set, gives held-back attempts places in line and brings them back at their
	// places (Worker.Line); without it they come back through asynq's retry set, which keeps
	// whole seconds, and ask afresh.
	Line *Line
	// Room, when set with Line and Leases (Worker.Room), keeps held-back attempts with a place
	// in this process until their places, instead of a second run of their tasks.
	Room *Room
	// Complete, when set (Worker.Completions), lets the write that records a delivered
	// attempt complete its asynq task too, as ResolveHandler.Complete does; nil with
	// Replicated's REDIS_MIN_REPLICAS_ACK on.
	Complete *TaskCompletions
}

// NewWebhookHandler returns the handler of d, whose OnTerminal queues deliveries on rdb.
func NewWebhookHandler(rdb redis.UniversalClient, d WebhookDeps) *WebhookHandler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &WebhookHandler{d: d, client: asynq.NewClientFromRedisClient(rdb)}
}

// OnTerminal queues the webhook delivery of a job that just became terminal; it is the
// ResolveHandler's TerminalFunc. A job without a webhook, or whose delivery already ended,
// queues nothing, so calling it again (a re-run resolve task) is harmless.
func (h *WebhookHandler) OnTerminal(ctx context.Context, r Record) error {
	if r.Webhook == nil || !r.Webhook.Pending() {
		return nil
	}
	return enqueueWebhook(ctx, h.client, r.ID, r.KeyID, r.Webhook.URL, r.Webhook.CurrentGeneration(), h.d.Policy,
		asynq.TaskID(deliveryOwner(&r)))
}

// notDueError reschedules a delivery task that asynq started before its next_attempt_at.
// asynq keeps retry times in whole seconds and may start a task up to a second early; a
// receiver's Retry-After and the backoff schedule must not be cut short by that. lined: the
// task has a place in the Line just after next_attempt_at (WebhookHandler.notDue), which
// brings it back then; else asynq does, after wait.
type notDueError struct {
	wait  time.Duration
	lined bool
}

func (e *notDueError) Error() string {
	return fmt.Sprintf("jobs: webhook attempt not due for %s", e.wait)
}

// IsWebhookDeferred reports whether err reschedules a delivery without it being a failure:
// an attempt held back by the per-URL rate, or a task started before its attempt was due.
// Register it with Worker.NotFailure, so no retry is spent.
func IsWebhookDeferred(err error) bool {
	var hb *webhooks.HeldBackError
	var nd *notDueError
	return errors.As(err, &hb) || errors.As(err, &nd)
}

// WebhookRetryDelay is the asynq RetryDelayFunc of TypeWebhook tasks: the rate limiter's wait
// for a held-back attempt, the time left for one not yet due, the policy's delay (backoff or
// Retry-After) for a failed one, and a short capped backoff for errors that were not attempts
// (Redis trouble).
func WebhookRetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var hb *webhooks.HeldBackError
	if errors.As(err, &hb) {
		return comeBack(hb.Wait, hb.Placed)
	}
	var nd *notDueError
	if errors.As(err, &nd) {
		return comeBack(nd.wait, nd.lined)
	}
	var re *retryError
	if errors.As(err, &re) && (re.lined || re.delay > 0) {
		return comeBack(re.delay, re.lined)
	}
	return min(time.Second<<min(n, 6), time.Minute)
}

// comeBack is asynq's delay for a task that should run again after wait. With a place in the
// Line (lined) the Line brings it back then, and asynq's own forwarder, which keeps whole
// seconds, only if no Line did, placedBackstop later.
func comeBack(wait time.Duration, lined bool) time.Duration {
	if lined {
		return wait + placedBackstop
	}
	return max(wait, time.Millisecond)
}

func (h *WebhookHandler) log() *slog.Logger { return h.d.Logger }

// current reports whether st is the live, pending delivery of generation gen.
func current(st *webhooks.State, gen int) bool {
	return st != nil && st.Pending() && st.CurrentGeneration() == gen
}

// firstRun reports whether the task of ctx has not failed a run yet: asynq counts failed runs
// only (a held-back or not-yet-due run is not one, IsWebhookDeferred), so the count stays the
// same across the runs of one attempt. Outside asynq (a handler called directly), true.
func firstRun(ctx context.Context) bool {
	n, ok := asynq.GetRetryCount(ctx)
	return !ok || n == 0
}

// ProcessTask implements asynq.Handler: one attempt of one delivery.
func (h *WebhookHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	growStack()
	return h.process(ctx, t)
}

// process is ProcessTask's work, on the stack growStack made.
func (h *WebhookHandler) process(ctx context.Context, t *asynq.Task) error {
	var p WebhookPayload
	if err := recjson.Unmarshal(t.Payload(), &p); err != nil || p.JobID == "" || p.KeyID == "" || p.Generation < 1 {
		return fmt.Errorf("jobs: bad webhook payload %q: %w", t.Payload(), asynq.SkipRetry)
	}
	ctx = tracing.Extract(ctx, p.Trace)
	_, err := h.attempt(ctx, p, taskIDOf(ctx, webhookTaskID(p.JobID, p.Generation)), nil)
	return err
}

// heldAttempt is an attempt waiting in the Room for its place in line (placed), or to ask
// again: the delivery (its URL filled in), the task whose run was held back, the name it asks
// under for a place and the job lease that run took, which the Room keeps until the attempt
// is made or handed back.
type heldAttempt struct {
	p      WebhookPayload
	task   string
	place  string
	placed bool
	lease  *Lease
}

// attempt makes one attempt of delivery p for the run of task: a run of the task itself
// (held nil), or the Room's run of an attempt held back earlier. kept reports that the
// attempt's job lease went on to the Room (held back again, to wait there): the caller must
// then neither release it nor hand the attempt back.
func (h *WebhookHandler) attempt(ctx context.Context, p WebhookPayload, task string, held *heldAttempt) (kept bool, _ error) {
	log := h.log().With("job_id", p.JobID, "key_id", p.KeyID, "generation", p.Generation)

	// Round trip 1: a job lease on the attempt, the record and the key, in one pipeline, and
	// with them, when the task names its URL and has not failed an attempt yet, the attempt's
	// rate check (below). The lease makes a dead worker's attempt be made again within
	// seconds; its token also names the attempt's in-flight lease, which the reaper gives
	// back, so the dead attempt does not hold a slot of the cap until it expires. Lease and
	// rate slot are taken before the record says whether there is anything to deliver: a
	// lease released unused costs nothing, and a slot is given back (one more round trip, for
	// a stale or duplicate task only).
	//
	// The rate slot (and a lease under the cap of attempts in flight) comes before the send: a
	// held-back attempt is rescheduled for when a slot frees, and costs neither a retry nor a
	// worker slot while it waits. With a Line it gets a place in line, named after its task
	// and attempt, so that the same attempt finds its place when it comes back: by the number
	// of failed runs asynq counts (held-back runs are not failures) when the check rides with
	// the reads, by the record's attempts when it follows them.
	//
	// A run from the Room takes its parked job lease again, and checks at the place it waited
	// for.
	token := newLeaseToken()
	var (
		take    func() (*Lease, context.Context, error)
		read    func() (Snapshot, error)
		readKey func() (keys.Key, error)
		taken   func() (webhooks.Turn, error)
	)
	early := p.URL != "" && (held != nil || firstRun(ctx))
	place := ""
	switch {
	case held != nil:
		place, token = held.place, held.lease.ref.Token
	case early && h.d.Line != nil:
		place = firstPlace(task)
	}
	ref := LeaseRef{Kind: LeaseWebhook, KeyID: p.KeyID, JobID: p.JobID, Gen: p.Generation, Task: task, Token: token}
	if held != nil {
		ref = held.lease.ref // taken again: parked while it waited, it is renewed from now on
	}
	_, _ = h.d.Store.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		if h.d.Leases != nil {
			take = h.d.Leases.TakeIn(ctx, pl, ref)
		}
		read = h.d.Store.GetIn(ctx, pl, p.KeyID, p.JobID)
		readKey = h.d.Keys.GetIn(ctx, pl, p.KeyID)
		if early {
			taken = h.d.Limiter.TakeIn(ctx, pl, p.URL, token, place, h.d.Policy.InFlight(), h.d.Policy.TaskTimeout())
		}
		return nil
	})
	var turn webhooks.Turn
	var turnErr error
	if taken != nil {
		turn, turnErr = taken()
	}
	// giveBack returns an early check's slot or place when the run ends without an attempt.
	giveBack := func() {
		if taken == nil || turnErr != nil {
			return
		}
		taken = nil
		if err := h.d.Limiter.GiveBack(context.WithoutCancel(ctx), p.URL, turn, token, place); err != nil {
			log.Warn("giving back an unused webhook rate slot failed; it lapses on its own", "err", err)
		}
	}
	sctx := ctx
	jl := &Lease{ref: LeaseRef{Token: token}}
	if take != nil {
		var err error
		if jl, sctx, err = take(); err != nil {
			giveBack()
			return false, err
		}
		if held != nil {
			held.lease = jl // runHeld gives it back, or hands the attempt back under it
		} else {
			defer func() {
				if !kept {
					h.d.Leases.Release(jl)
				}
			}()
		}
	}
	snap, err := read()
	if errors.Is(err, ErrNotFound) {
		giveBack()
		log.Warn("webhook task for a missing job; nothing to deliver")
		return false, nil
	}
	if err != nil {
		giveBack()
		return false, err
	}
	rec := snap.Record
	if !current(rec.Webhook, p.Generation) {
		// Delivered, failed, or superseded by a redelivery: a duplicate or stale task.
		giveBack()
		return false, nil
	}
	if deliveryOwner(&rec) != task {
		// Replaced by a reaper after its worker's lease lapsed: the replacement delivers.
		giveBack()
		log.Info("webhook task replaced after its lease lapsed; nothing to do", "task", task)
		return false, nil
	}
	url := rec.Webhook.URL
	if next := rec.Webhook.NextAttemptAt; next != nil && !rec.Webhook.Held {
		// Not due yet. A held-back attempt's time (Held) is not waited for: the rate and the
		// cap decide when it goes, and a task handed back from a stopping worker's Room finds
		// the place it waited for in its early check and waits for that.
		if wait := time.Until(*next); wait > notDueSlack {
			giveBack()
			return false, h.notDue(ctx, task, *next, wait)
		}
	}
	if taken != nil && url != p.URL {
		giveBack() // not met in practice: a generation keeps its URL
	}
	if taken == nil {
		place = ""
		if h.d.Line != nil {
			place = task + "#" + strconv.Itoa(rec.Webhook.Attempts)
		}
		turn, turnErr = h.d.Limiter.Take(ctx, url, token, place, h.d.Policy.InFlight(), h.d.Policy.TaskTimeout())
	}
	if turnErr != nil {
		return false, turnErr
	}
	if turn.Wait > 0 {
		h.d.Metrics.HeldBack()
		p.URL = url
		return h.holdBack(ctx, snap, heldAttempt{p: p, task: task, place: place, placed: turn.Placed, lease: jl}, held != nil, turn)
	}
	lease := turn.Lease
	if turn.Delay > 0 {
		// Admitted at its place, which starts a few milliseconds from now: not before.
		t := time.NewTimer(turn.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}

	// The in-flight lease is given back with the attempt's record (the last round trip), or
	// alone when the run ends before that.
	released := false
	defer func() {
		if released {
			return
		}
		if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
			log.Warn("releasing the webhook lease failed; it expires on its own", "err", err)
		}
	}()
	key, err := readKey()
	if errors.Is(err, keys.ErrNotFound) {
		return false, h.giveUp(ctx, snap, p, "the API key of this job no longer exists")
	}
	if err != nil {
		return false, err
	}
	body, err := eventOf(rec, key.Credits).Body()
	if err != nil {
		return false, fmt.Errorf("jobs: encoding webhook event: %w: %w", err, asynq.SkipRetry)
	}
	at := now()
	hdr := http.Header{}
	if err := webhooks.Sign(hdr, key.SigningSecrets(at), webhooks.MessageID(p.JobID, p.Generation), at, body); err != nil {
		log.Error("cannot sign the webhook", "err", err)
		return false, h.giveUp(ctx, snap, p, "the key's webhook secret is unusable")
	}
	// A span per attempt, in the job's trace; the receiver gets its traceparent. The span
	// names the receiver's host only, never its path or query.
	actx, span := tracing.Tracer().Start(sctx, "webhook attempt", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("linkhop.job_id", p.JobID), attribute.Int("linkhop.webhook.generation", p.Generation),
			attribute.String("server.address", hostOf(url))))
	tracing.InjectHeader(actx, hdr)
	o := h.d.Sender.Send(actx, url, hdr, body)
	if o.StatusCode != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", o.StatusCode))
	}
	if !o.Delivered {
		span.SetStatus(codes.Error, o.Class())
	}
	span.End()
	if jl.Lost() && !o.Delivered {
		// Stopped past the lease: a replacement run makes this attempt (the receiver may have
		// seen this one; it carries the same webhook-id).
		log.Warn("webhook lease lost during the attempt; the run that replaced this one delivers")
		return false, nil
	}
	if ctx.Err() != nil && !o.Delivered {
		// Shutdown or asynq's own timeout interrupted the attempt: not the receiver's doing,
		// so not an attempt; asynq runs the task again.
		return false, fmt.Errorf("jobs: webhook attempt interrupted: %w", ctx.Err())
	}
	h.d.Metrics.Attempt(o)

	// The last round trip: the attempt recorded, and its in-flight lease given back. A delivered
	// attempt's write also completes the task (docs/operations.md#a-job-in-three-round-trips):
	// every way on from a write that landed then ends the run without error.
	var delay time.Duration
	var retry, applied, mine bool
	var retryAt, lineAt time.Time
	var lined *redis.IntCmd
	var td *taskDone
	if o.Delivered {
		td = h.d.Complete.task(ctx)
	}
	// It is written even when ctx ended meanwhile: the attempt was made.
	var record func() (Snapshot, bool, error)
	wctx := context.WithoutCancel(ctx)
	_, _ = h.d.Store.rdb.Pipelined(wctx, func(pl redis.Pipeliner) error {
		lease.ReleaseIn(wctx, pl)
		record = h.d.Store.updateIn(wctx, pl, snap, func(r *Record) error {
			applied = false // applied again when the record changed meanwhile: the last one decides
			if !current(r.Webhook, p.Generation) {
				return ErrNoChange
			}
			// A replaced run (stopped past its lease, then resumed) records only a delivery,
			// which spares the receiver another one; its failure is the replacement's to make
			// good, and counting it would spend one of the policy's attempts twice.
			mine = deliveryOwner(r) == task
			if !mine && !o.Delivered {
				return ErrNoChange
			}
			delay, retry = h.d.Policy.Apply(r.Webhook, o, at)
			if retry {
				retryAt = *r.Webhook.NextAttemptAt
			}
			applied = true
			return nil
		}, td)
		if retry && mine && held == nil && h.d.Line != nil {
			// The retry's task takes a place in the Line at the retry's time, so that it starts
			// then, not up to a second early as asynq's whole seconds would have it (notDue). A
			// run from the Room has no task of its own: its caller hands the retry back.
			// retryAt is of this worker's clock, which the retry's run checks it against.
			lineAt = h.d.Line.onRedisClock(retryAt).Add(lineLead)
			lined = h.d.Line.placeIn(wctx, pl, task, lineAt)
		}
		return nil
	})
	released = true // by the pipeline; if it failed, the lease expires on its own
	snap, completed, err := record()
	if err != nil {
		// The attempt happened but is not recorded; asynq runs the task again and the
		// receiver may see this event twice, with the same webhook-id.
		return false, fmt.Errorf("jobs: recording webhook attempt of %s: %w", p.JobID, err)
	}
	if completed {
		td.completed() // asynq's own completion, after this run, is answered here
	}
	if !applied {
		return false, nil
	}
	st := snap.Webhook
	attrs := []any{"attempt", st.Attempts, "status_code", o.StatusCode, "duration", o.Duration}
	switch {
	case o.Delivered:
		h.d.Metrics.Delivery(webhooks.OutcomeDelivered)
		log.Info("webhook delivered", attrs...)
		return false, nil
	case !mine:
		return false, nil // the replacement run owns the retries
	case retry:
		h.d.Metrics.Delivery(webhooks.OutcomeRetrying)
		log.Info("webhook attempt failed; retrying", append(attrs, "error", o.Describe(), "retry_in", delay)...)
		re := &retryError{err: fmt.Errorf("jobs: webhook attempt %d failed: %s", st.Attempts, o.Describe()), delay: delay}
		if lined != nil && lined.Err() == nil {
			h.d.Line.placed(lineAt)
			re.lined = true
		}
		return false, re
	default:
		h.d.Metrics.Delivery(webhooks.OutcomeFailed)
		log.Warn("webhook delivery failed; no more retries", append(attrs, "error", o.Describe())...)
		return false, nil
	}
}

// holdBack reschedules attempt a, which turn held back. It waits in the Room when there is
// room (kept: its job lease goes with it, parked in a write that also completes the run's
// task, and the run ends with nothing for asynq to do): for its place in line, or, held back
// by the cap on attempts in flight without one, until it asks again. Else its place is
// written for the Line; without a place it comes back through asynq's retry when a slot
// frees. next_attempt_at is written in the same round trip, only for a change of more
// than a second: a busy URL holds tasks back again and again, and the record need not follow
// every few milliseconds. Best effort, like the place: a task that is not forwarded at its
// place comes back through asynq's retry and asks again. A run from the Room (fromRoom) that
// cannot wait there again has no task to reschedule: its caller hands the attempt back to the
// queue on the error returned.
func (h *WebhookHandler) holdBack(ctx context.Context, snap Snapshot, a heldAttempt, fromRoom bool, turn webhooks.Turn) (kept bool, _ error) {
	next := now().Add(turn.Wait)
	if turn.Placed {
		next = turn.At.UTC().Truncate(time.Millisecond) // as now() keeps record times
	}
	note := true
	if stored := snap.Webhook.NextAttemptAt; stored != nil && next.Sub(*stored) <= time.Second {
		note = false
	}
	room := turn.Wait <= roomHorizon && h.d.Leases != nil && h.d.Room.reserve()
	var update func() (Snapshot, error)
	var place *redis.IntCmd
	var park func() error
	_, _ = h.d.Store.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		if turn.Placed && !room && !fromRoom {
			place = h.d.Line.placeIn(ctx, pl, a.task, turn.At)
		}
		if room {
			// The lease lapses one JOB_LEASE_TTL after the place if this process is gone by then.
			// A run of a task (not from the Room) completes the task in the same write: with
			// its attempt in the Room there is nothing left for asynq to do, and its Done would
			// be one more round trip.
			var td *taskDone
			if !fromRoom {
				td = h.d.Complete.task(ctx)
			}
			park = h.d.Leases.parkIn(ctx, pl, a.lease, turn.At.Add(h.d.Leases.TTL()), td)
		}
		if note {
			update = h.d.Store.UpdateIn(ctx, pl, snap, func(r *Record) error {
				if !current(r.Webhook, a.p.Generation) {
					return ErrNoChange
				}
				r.Webhook.NextAttemptAt, r.Webhook.Held = &next, true
				return nil
			})
		}
		return nil
	})
	placed := false
	if place != nil {
		if err := place.Err(); err != nil {
			h.log().Warn("keeping a held-back webhook's place in line", "job_id", a.p.JobID, "err", err)
		} else {
			placed = true
			h.d.Line.placed(turn.At)
		}
	}
	if update != nil {
		if _, err := update(); err != nil && !errors.Is(err, ErrNoChange) {
			h.log().Warn("recording a held-back webhook attempt", "job_id", a.p.JobID, "err", err)
		}
	}
	if room {
		if err := park(); err != nil {
			// Out of the beat but not parked: the lease lapses within JOB_LEASE_TTL and a
			// reaper queues the delivery again, unless this task's retry (or, for a run from
			// the Room, its hand-back) does first.
			h.d.Room.unreserve()
			return false, fmt.Errorf("jobs: parking the lease of a held-back webhook attempt: %w", err)
		}
		h.d.Room.start(turn.Wait,
			func(ctx context.Context) { h.runHeld(ctx, a) },
			func(ctx context.Context) { h.handBack(ctx, a) })
		return true, nil
	}
	return false, &webhooks.HeldBackError{Wait: turn.Wait, Placed: placed}
}

// runHeld makes attempt a at its place, from the Room, and then releases its job lease, or,
// when the run ends in an error (a failure to retry later, held back again, Redis trouble),
// hands the attempt back to the queue under a new task (handBack).
func (h *WebhookHandler) runHeld(ctx context.Context, a heldAttempt) {
	ctx = tracing.Extract(ctx, a.p.Trace)
	kept, err := h.attempt(ctx, a.p, a.task, &a)
	switch {
	case kept:
	case err == nil:
		h.d.Leases.releaseParked(a.lease) // taken again by the run, unless it ended before
	default:
		var re *retryError
		if !IsWebhookDeferred(err) && !errors.As(err, &re) {
			// A failed attempt was logged when it was recorded; this is anything else (Redis).
			h.log().Warn("a waiting webhook attempt could not be made at its place; handing it back to the queue",
				"job_id", a.p.JobID, "err", err)
		}
		h.handBack(ctx, a)
	}
}

// handBack queues the delivery of attempt a, which waited in the Room, under a new task, as a
// reaper does for a lapsed lease (Reap: from next_attempt_at, owned by the new task from then
// on, but with no in-flight lease to give back), and releases its job lease. The place in line
// it waited for goes to the new task, renamed for its first run to ask under, so that the
// attempt keeps its turn (a worker that stops hands back every attempt waiting in it). If queueing fails, the lease is left to
// lapse, and a reaper of any worker queues the same new task within JOB_LEASE_TTL.
func (h *WebhookHandler) handBack(ctx context.Context, a heldAttempt) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	l := a.lease
	if a.placed {
		if err := h.d.Limiter.MovePlace(ctx, a.p.URL, a.place, firstPlace(replacementID(l.ref))); err != nil {
			h.log().Warn("moving a waiting webhook attempt's place in line to its new task failed; it asks again behind the line",
				"job_id", l.ref.JobID, "err", err)
		}
	}
	if err := h.requeue(ctx, l.ref, false); err != nil {
		h.log().Warn("handing a waiting webhook attempt back to the queue failed; its lease lapses and a reaper does it",
			"job_id", l.ref.JobID, "err", err)
		h.d.Leases.abandon(l)
		return
	}
	h.d.Leases.releaseParked(l)
}

// firstPlace names the place in line that the first run of a delivery task asks for, with its
// rate check beside its reads (a place is named after its task and attempt, so that the same
// attempt finds it again).
func firstPlace(task string) string { return task + "#r0" }

// notDue reschedules the run of task, which started wait before its attempt is due (at). asynq
// keeps retry times in whole seconds, so its retry would start the task early again, and again,
// every pass of its forwarder until the second turns: the task takes a place in the Line just
// after at instead, which brings it back then to the millisecond. Without a Line, or when the
// place cannot be written, asynq's retry does, after wait.
func (h *WebhookHandler) notDue(ctx context.Context, task string, at time.Time, wait time.Duration) error {
	if h.d.Line == nil {
		return &notDueError{wait: wait}
	}
	at = h.d.Line.onRedisClock(at).Add(lineLead) // the Line makes a task pending lineLead before its place
	if err := h.d.Line.placeIn(ctx, h.d.Store.rdb, task, at).Err(); err != nil {
		h.log().Warn("placing a webhook task started early in line", "task", task, "err", err)
		return &notDueError{wait: wait}
	}
	h.d.Line.placed(at)
	return &notDueError{wait: wait + lineLead, lined: true}
}

// giveUp ends a delivery that no retry can make succeed (no key, unusable secret): failed,
// with the reason in last_error, and no attempt counted since nothing was sent.
func (h *WebhookHandler) giveUp(ctx context.Context, snap Snapshot, p WebhookPayload, reason string) error {
	_, err := h.d.Store.UpdateFrom(ctx, snap, func(r *Record) error {
		if !current(r.Webhook, p.Generation) {
			return ErrNoChange
		}
		r.Webhook.Status = webhooks.StatusFailed
		r.Webhook.LastError = &reason
		r.Webhook.NextAttemptAt, r.Webhook.Held = nil, false
		return nil
	})
	if err != nil {
		return err
	}
	h.d.Metrics.Delivery(webhooks.OutcomeFailed)
	h.log().Error("webhook delivery given up", "job_id", p.JobID, "reason", reason)
	return nil
}

// eventOf is the event of terminal job r (docs/webhooks.md#the-event). It is built from the stored record,
// so every attempt of a delivery sends the same fields; balance is the key's balance when the
// attempt is made (null for a key without a credit balance).
func eventOf(r Record, balance *int64) webhooks.Event {
	e := webhooks.Event{
		Event:          webhooks.EventFor(string(r.Status)),
		CreatedAt:      r.UpdatedAt,
		JobID:          r.ID,
		Status:         string(r.Status),
		TargetURL:      r.TargetURL,
		Error:          r.Error,
		CreditsCharged: r.CreditsCharged,
		Balance:        balance,
	}
	if r.CompletedAt != nil {
		e.CreatedAt = *r.CompletedAt
	}
	if r.Provider != "" {
		provider := r.Provider
		e.Provider = &provider
	}
	if r.Tier == resolve.TierStandard || r.Tier == resolve.TierPremium {
		tier := r.Tier
		e.Tier = &tier
	}
	return e
}

// Reap is the ReapFunc of webhook leases: the attempt of a worker that stopped refreshing its
// lease is made again by a new task, which from then on owns the delivery, unless the
// delivery ended or was superseded meanwhile. The dead attempt's in-flight lease is given back
// at once, so the per-URL cap counts only attempts that still run; its rate slot stays spent.
func (h *WebhookHandler) Reap(ctx context.Context, ref LeaseRef) error {
	return h.requeue(ctx, ref, true)
}

// requeue is Reap; inFlight says whether the attempt may hold an in-flight lease to give back
// (an attempt handed back from the Room holds none: it waited, or its run gave it back).
func (h *WebhookHandler) requeue(ctx context.Context, ref LeaseRef, inFlight bool) error {
	next := replacementID(ref)
	queue := false
	rec, err := h.d.Store.Update(ctx, ref.KeyID, ref.JobID, func(r *Record) error {
		queue = false
		if !current(r.Webhook, ref.Gen) {
			return ErrNoChange
		}
		switch deliveryOwner(r) {
		case ref.Task:
			r.WebhookTask, queue = next, true
			return nil
		case next:
			queue = true
		}
		return ErrNoChange
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if rec.Webhook != nil && inFlight {
		if err := h.d.Limiter.ReleaseAs(ctx, rec.Webhook.URL, ref.Token); err != nil {
			return err
		}
	}
	if !queue {
		return nil
	}
	opts := []asynq.Option{asynq.TaskID(next)}
	if at := rec.Webhook.NextAttemptAt; at != nil && time.Until(*at) > 0 {
		opts = append(opts, asynq.ProcessAt(*at))
	}
	return enqueueWebhook(ctx, h.client, ref.JobID, ref.KeyID, rec.Webhook.URL, ref.Gen, h.d.Policy, opts...)
}

// hostOf is the host of a webhook URL, for spans.
func hostOf(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
