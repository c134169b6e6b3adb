// Package jobs holds linkhop's background work: the asynq task types and payloads, the job
// record in Redis, submitting jobs, and the handlers the worker runs.
//
// A job id is a UUID and is also the asynq TaskID, so a job is queued at most once. Payloads
// carry ids only; the record in Redis is the single source of truth, which makes handlers
// idempotent under asynq's at-least-once delivery.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// TypeResolve is the asynq task type that resolves one job's link.
const TypeResolve = "link:resolve"

// QueueResolve is the asynq queue of resolve tasks.
const QueueResolve = "resolve"

// ResolvePayload is the payload of a TypeResolve task: ids only.
type ResolvePayload struct {
	JobID string `json:"job_id"`
	KeyID string `json:"key_id"`
	// Trace is the W3C trace context of the request that created the job, when tracing is on
	// (docs/operations.md#tracing), so the worker's spans join the request's trace.
	Trace map[string]string `json:"trace,omitempty"`
}

// infraRetries is how many more asynq retries a resolve task gets than provider attempts,
// for errors that say nothing about the link (Redis unreachable mid-task).
const infraRetries = 10

// TaskOptions are the asynq settings of resolve tasks, from RESOLVE_* configuration.
type TaskOptions struct {
	MaxAttempts int           // RESOLVE_MAX_ATTEMPTS
	Timeout     time.Duration // RESOLVE_TIMEOUT; the task gets a margin above it
	// Webhooks is the WEBHOOK_* policy, for the tasks of redeliveries.
	Webhooks webhooks.Policy
}

// NewResolveTask builds the task of job jobID.
func NewResolveTask(jobID, keyID string, o TaskOptions) (*asynq.Task, error) {
	return newResolveTask(context.Background(), jobID, keyID, o)
}

// newResolveTask is NewResolveTask carrying the trace context of ctx.
func newResolveTask(ctx context.Context, jobID, keyID string, o TaskOptions) (*asynq.Task, error) {
	b, err := json.Marshal(ResolvePayload{JobID: jobID, KeyID: keyID, Trace: tracing.Inject(ctx)})
	if err != nil {
		return nil, fmt.Errorf("jobs: encoding payload: %w", err)
	}
	timeout := max(o.Timeout, time.Second)
	return asynq.NewTask(TypeResolve, b,
		asynq.TaskID(jobID),
		asynq.Queue(QueueResolve),
		// The handler counts provider attempts on the record (RESOLVE_MAX_ATTEMPTS); asynq's
		// own retries only bound infrastructure errors, so it gets some room above that.
		asynq.MaxRetry(max(o.MaxAttempts, 1)+infraRetries),
		// The margin covers the record updates around the resolve itself, so asynq never
		// cancels a handler that is only finishing its bookkeeping.
		asynq.Timeout(timeout+10*time.Second),
	), nil
}

// Queue submits jobs: it writes the record and enqueues its task, and undoes the record if
// the enqueue fails, so a failed submit leaves nothing behind.
type Queue struct {
	store  *Store
	client *asynq.Client
	rdb    redis.UniversalClient
	opts   TaskOptions
	ack    replicas.Ack // REDIS_MIN_REPLICAS_ACK; see RequireReplicas
	// published is set once the queue's name is in asynq's set of queues (enqueueMany).
	published atomic.Bool
}

// NewQueue returns a Queue on rdb.
func NewQueue(rdb redis.UniversalClient, store *Store, o TaskOptions) *Queue {
	return &Queue{store: store, client: asynq.NewClientFromRedisClient(rdb), rdb: rdb, opts: o}
}

// pendingKey is asynq's list of pending tasks of a queue (asynq internal naming, stable since
// v0.18); reading its length is cheaper than the Inspector's full queue statistics.
func pendingKey(queue string) string { return "asynq:{" + queue + "}:pending" }

// createScript creates a job in one step, under the API key's hash tag: it honours an
// earlier idempotency claim, takes the job's credits from a key that has a balance (never
// below zero), stores the record and the claim. Reply {code, value}: 0 created (value: the
// balance after, -1 without one), 1 replay (value: the earlier claim), 2 out of credits
// (value: the balance), 3 the job id exists.
//
// KEYS: the job record, the idempotency key, the key record.
// ARGV: record JSON, retention in ms, claim JSON ("" = no idempotency key), credit cost
// (0 = no credit check).
var createScript = redis.NewScript(keys.Script(`
if ARGV[3] ~= '' then
  local prev = redis.call('GET', KEYS[2])
  if prev then return {1, prev} end
end
local bal = -1
local cost = tonumber(ARGV[4])
if cost > 0 then
  local b = redis.call('HGET', KEYS[3], {{.Credits}})
  if b then
    b = tonumber(b)
    if b < cost then return {2, tostring(b)} end
    bal = redis.call('HINCRBY', KEYS[3], {{.Credits}}, -cost)
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3, ''} end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) end
return {0, tostring(bal)}`))

// undoScript removes what createScript made for a job whose enqueue failed: the record, the
// claim (if it is still this job's) and the credits (to a key that still has a balance).
// KEYS as createScript; ARGV: job id, credits to give back.
var undoScript = redis.NewScript(keys.Script(`
redis.call('DEL', KEYS[1])
local c = redis.call('GET', KEYS[2])
if c and cjson.decode(c).job_id == ARGV[1] then redis.call('DEL', KEYS[2]) end
local n = tonumber(ARGV[2])
if n > 0 and redis.call('HEXISTS', KEYS[3], {{.Credits}}) == 1 then
  redis.call('HINCRBY', KEYS[3], {{.Credits}}, n)
end
return 0`))

// Submitted is the outcome of Submit.
type Submitted struct {
	// Position is the number of tasks ahead in the queue, a hint for the client.
	Position int64
	// Replay is the earlier claim of the request's idempotency key; nothing was created.
	Replay *Claim
	// OutOfCredits says the key's balance (Balance) is below the job's cost; nothing was created.
	OutOfCredits bool
	// Balance is the key's credit balance after the call, nil for a key without one.
	Balance *int64
}

// Submit creates job r (status queued) and enqueues its resolve task: two round trips, the
// create script with the queue length, then the enqueue script (enqueueMany). cost is the credits to take
// (0 for a key without a balance); r.IdempotencyKey, when set, is claimed in the same step.
// If the enqueue fails, everything is undone and the error returned: a failed submit leaves
// nothing behind.
func (q *Queue) Submit(ctx context.Context, r *Record, cost int64) (Submitted, error) {
	r.Status = StatusQueued
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now()
	}
	r.UpdatedAt = r.CreatedAt
	r.CreditsHeld = cost
	if r.Hops == nil {
		r.Hops = []resolve.Hop{}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return Submitted{}, fmt.Errorf("jobs: encoding %s: %w", r.ID, err)
	}
	claim := ""
	if r.IdempotencyKey != "" {
		c, _ := json.Marshal(Claim{JobID: r.ID, URL: r.URL, WebhookURL: r.WebhookURL})
		claim = string(c)
	}
	ks := []string{RecordKey(r.KeyID, r.ID), idemKey(r.KeyID, r.IdempotencyKey), keys.RecordKey(r.KeyID)}
	var created *redis.Cmd
	var pending *redis.IntCmd
	run := func() error {
		_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			created = createScript.EvalSha(ctx, p, ks, b, q.store.retention.Milliseconds(), claim, cost)
			pending = p.LLen(ctx, pendingKey(QueueResolve))
			return nil
		})
		return err
	}
	// The position is only a hint: the pipeline's error matters only through the script's.
	_ = run()
	if isNoScript(created.Err()) {
		if err := createScript.Load(ctx, q.rdb).Err(); err != nil {
			return Submitted{}, fmt.Errorf("jobs: loading the create script: %w", err)
		}
		_ = run()
	}
	reply, err := created.Slice()
	if err != nil {
		return Submitted{}, fmt.Errorf("jobs: creating %s: %w", r.ID, err)
	}
	code, _ := reply[0].(int64)
	val, _ := reply[1].(string)
	var out Submitted
	switch code {
	case 1:
		var c Claim
		if err := json.Unmarshal([]byte(val), &c); err != nil {
			return Submitted{}, fmt.Errorf("jobs: reading an idempotency claim: %w", err)
		}
		out.Replay = &c
		return out, nil
	case 2:
		n, _ := strconv.ParseInt(val, 10, 64)
		out.OutOfCredits, out.Balance = true, &n
		return out, nil
	case 3:
		return Submitted{}, fmt.Errorf("jobs: creating %s: %w", r.ID, ErrExists)
	}
	if n, _ := strconv.ParseInt(val, 10, 64); n >= 0 {
		out.Balance = &n
	}
	// The batch's enqueue script, which writes asynq's task as asynq.Client does with less work
	// per call. It skips a task that exists: then Ensure (an idempotent replay racing this
	// request) already enqueued this very job's task, which is success (undoing would lose the job).
	if err := q.enqueueMany(ctx, []*Record{r}); err != nil {
		// Undo with a fresh context: the request's may be what failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if uerr := undoScript.Run(cctx, q.rdb, ks, r.ID, cost).Err(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the job: %w", uerr))
		}
		return Submitted{}, fmt.Errorf("jobs: enqueueing %s: %w", r.ID, err)
	}
	if q.ack.On() {
		if err := q.replicated(ctx, r.KeyID, []string{r.ID}, func(c context.Context) error {
			return undoScript.Run(c, q.rdb, ks, r.ID, cost).Err()
		}); err != nil {
			return Submitted{}, err
		}
	}
	out.Position = pending.Val()
	return out, nil
}

// Ensure enqueues the resolve task of the queued job r again unless it is already there.
// When Redis fails between Submit's create script and its enqueue, the undo usually fails
// too and leaves the record and its idempotency claim without a task; a client's retry with
// the same key then replays that job, and must get one that runs rather than one that stays
// queued forever. The job id is the task id, so an existing task is never duplicated.
func (q *Queue) Ensure(ctx context.Context, r Record) error {
	task, err := NewResolveTask(r.ID, r.KeyID, q.opts)
	if err != nil {
		return err
	}
	if _, err := q.client.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("jobs: re-enqueueing %s: %w", r.ID, err)
	}
	return nil
}

// isNoScript reports whether Redis did not know a script's SHA (first use, or after a restart).
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
