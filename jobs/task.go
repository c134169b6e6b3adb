// Package jobs holds linkhop's background work: the asynq task types and payloads, the job
// record in Redis, submitting jobs, and the handlers the worker runs.
//
// A job id is a UUID and is also the asynq TaskID, so a job is queued at most once. Payloads
// carry ids (and a resolve task its link's URL, so that the worker's first round trip can
// read the cache too); the record in Redis is the single source of truth, which makes
// handlers idempotent under asynq's at-least-once delivery.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/webhooks"
)

// TypeResolve is the asynq task type that resolves one job's link.
const TypeResolve = "link:resolve"

// QueueResolve is the asynq queue of resolve tasks.
const QueueResolve = "resolve"

// ResolvePayload is the payload of a TypeResolve task: the job's ids, and its link.
type ResolvePayload struct {
	JobID string `json:"job_id"`
	KeyID string `json:"key_id"`
	// URL is the job's link as submitted (the record's url, which never changes), so that the
	// worker can ask for the cache and the link's upstream lock in the round trip that reads
	// the record (docs/benchmarks.md#the-worker-in-four-round-trips). The record stays the
	// source of truth: a task whose URL is not the record's is run from the record. Empty in
	// tasks queued by versions before it, which the worker runs in one more round trip.
	URL string `json:"url,omitempty"`
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

// NewResolveTask builds the task of job jobID of key keyID, whose link is url.
func NewResolveTask(jobID, keyID, url string, o TaskOptions) (*asynq.Task, error) {
	return newResolveTask(context.Background(), jobID, keyID, url, o)
}

// newResolveTask is NewResolveTask carrying the trace context of ctx.
func newResolveTask(ctx context.Context, jobID, keyID, url string, o TaskOptions) (*asynq.Task, error) {
	b, err := recjson.Marshal(ResolvePayload{JobID: jobID, KeyID: keyID, URL: url, Trace: tracing.Inject(ctx)})
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
	// split makes Submit create a job and enqueue its task in two steps, as on Redis Cluster,
	// where the job's slot and asynq's are different nodes; see Submit.
	split atomic.Bool
}

// NewQueue returns a Queue on rdb.
func NewQueue(rdb redis.UniversalClient, store *Store, o TaskOptions) *Queue {
	q := &Queue{store: store, client: asynq.NewClientFromRedisClient(rdb), rdb: rdb, opts: o}
	_, cluster := rdb.(*redis.ClusterClient)
	q.split.Store(cluster)
	return q
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
-- An existing id is refused before the credits are taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return {3, ''} end
local bal = -1
local cost = ARGV[4] + 0
if cost > 0 then
  local b = redis.call('HGET', KEYS[3], {{.Credits}})
  if b then
    b = b + 0
    if b < cost then return {2, tostring(b)} end
    bal = redis.call('HINCRBY', KEYS[3], {{.Credits}}, -cost)
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) end
return {0, tostring(bal)}`))

// undoScript removes what createScript (or submitLua) made for a job whose enqueue failed
// or whose replicas did not acknowledge it: the record, the claim (if it is still this job's)
// and the credits the record still holds (to a key that still has a balance). The credits come
// from the record rather than from the caller: nothing goes back when the create never ran,
// and nothing twice when a worker already settled the job's credits (charged or refunded).
// KEYS as createScript; ARGV: job id.
var undoScript = redis.NewScript(keys.Script(`
local rec = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
local c = redis.call('GET', KEYS[2])
if c and cjson.decode(c).job_id == ARGV[1] then redis.call('DEL', KEYS[2]) end
if not rec then return 0 end
local n = tonumber(cjson.decode(rec).credits_held) or 0
if n > 0 and redis.call('HEXISTS', KEYS[3], {{.Credits}}) == 1 then
  redis.call('HINCRBY', KEYS[3], {{.Credits}}, n)
end
return 0`))

// submitLua is the Lua function submit(K, rec, ttl, claim, cost, id, msg, now): createScript
// and the enqueue of the job's task (enqueueManyScript's write) in one atomic step, for a Redis
// whose keys all live on one server (a single server, or Sentinel's primary): the task can
// never be seen without its record, and a replay or a refusal queues nothing. Every check comes
// before the first write, and the push before the other writes, so a script that fails leaves
// nothing behind (after a first write Redis no longer refuses a script's writes for memory, and
// a broken list fails the push). Reply as createScript's, with the queue's length before the
// push as a third value of a created job. submitScript runs it on its own, and thenSubmit in
// the admission of the request (Queue.Plan).
//
// Each redis.call costs a script several times the command's own work (docs/benchmarks.md), so
// the script makes no call that a write's own answer gives: the push answers the queue's
// length, and the record's SET NX finds an id that exists (then the push is taken back and
// nothing else was written). A new job's id is a random UUID, so its task cannot exist when its
// record did not: the task hash is written without looking.
//
// K: the job record, the idempotency key, the key record, asynq's pending list, the task's hash.
// rec: record JSON; ttl: retention in ms; claim: claim JSON ("" = no idempotency key); cost:
// the credits to take from a key with a balance (0 = no credit check), a number; id: the job
// id (= task id); msg: the task message; now: now in ns; known: the key's balance as the caller
// read it in this same script (nil: read here).
const submitLua = `
local function submit(K, rec, ttl, claim, cost, id, msg, now, known)
if claim ~= '' then
  local prev = redis.call('GET', K[2])
  if prev then return {1, prev} end
end
local b = false
if cost > 0 then
  b = known
  if b == nil then b = redis.call('HGET', K[3], {{.Credits}}) end
  if b then
    b = b + 0
    if b < cost then return {2, tostring(b)} end
  end
end
local pos = redis.call('LPUSH', K[4], id) - 1
if not redis.call('SET', K[1], rec, 'NX', 'PX', ttl) then
  redis.call('LREM', K[4], 1, id)
  return {3, ''}
end
redis.call('HSET', K[5], 'msg', msg, 'state', 'pending', 'pending_since', now)
local bal = -1
if b then bal = redis.call('HINCRBY', K[3], {{.Credits}}, -cost) end
if claim ~= '' then redis.call('SET', K[2], claim, 'PX', ttl) end
return {0, tostring(bal), pos}
end
`

// submitScript is submitLua on its own.
// KEYS: as submitLua's K. ARGV: record JSON, retention in ms, claim JSON, credit cost, job id,
// task message, now in ns.
var submitScript = redis.NewScript(keys.Script(submitLua + `
return submit(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4] + 0, ARGV[5], ARGV[6], ARGV[7])`))

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

// Submit creates job r (status queued) and enqueues its resolve task. cost is the credits to
// take (0 for a key without a balance); r.IdempotencyKey, when set, is claimed in the same
// step. On a single Redis or through Sentinel that is one round trip, one script that creates
// the job and enqueues its task (submitOne). On Redis Cluster the job's slot (the API key's
// hash tag) and asynq's (asynq:{resolve}) are on different nodes, which no script spans and
// whose order in a pipeline is not kept, so it is two: the create script with the queue
// length, then the enqueue script once the record exists (submitSplit). Either way a task
// never runs before its record exists, and a failed submit leaves nothing behind: a failed
// enqueue is undone and its error returned.
func (q *Queue) Submit(ctx context.Context, r *Record, cost int64) (Submitted, error) {
	r.queued()
	r.CreditsHeld = cost
	b, err := recjson.Marshal(r)
	if err != nil {
		return Submitted{}, fmt.Errorf("jobs: encoding %s: %w", r.ID, err)
	}
	claim := ""
	if r.IdempotencyKey != "" {
		c, _ := recjson.Marshal(Claim{JobID: r.ID, URL: r.URL, WebhookURL: r.WebhookURL})
		claim = string(c)
	}
	ks := []string{RecordKey(r.KeyID, r.ID), idemKey(r.KeyID, r.IdempotencyKey), keys.RecordKey(r.KeyID)}
	var out Submitted
	if q.split.Load() {
		out, err = q.submitSplit(ctx, r, b, claim, cost, ks)
	} else {
		out, err = q.submitOne(ctx, r, b, claim, cost, ks)
	}
	if err != nil || out.Replay != nil || out.OutOfCredits || !q.ack.On() {
		return out, err
	}
	if err := q.replicated(ctx, r.KeyID, []string{r.ID}, func(c context.Context) error {
		return undoScript.Run(c, q.rdb, ks, r.ID).Err()
	}); err != nil {
		return Submitted{}, err
	}
	return out, nil
}

// submitOne is Submit in one round trip: submitScript, with asynq's set of queue names written
// once per process (see enqueueMany). A server that turns out to be a Cluster node (the keys
// are in different slots) makes this Queue split its submits from then on.
func (q *Queue) submitOne(ctx context.Context, r *Record, rec []byte, claim string, cost int64, ks []string) (Submitted, error) {
	msg, err := resolveTaskMessage(ctx, r.ID, r.KeyID, r.URL, q.opts)
	if err != nil {
		return Submitted{}, err
	}
	all := []string{ks[0], ks[1], ks[2], pendingKey(QueueResolve), taskKey(QueueResolve, r.ID)}
	published := q.published.Load()
	var (
		cmd   *redis.Cmd
		queue *redis.IntCmd
	)
	run := func() {
		// Each reply is read on its own below.
		_, _ = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if !published {
				queue = p.SAdd(ctx, allQueuesKey, QueueResolve)
			}
			cmd = submitScript.EvalSha(ctx, p, all, rec, q.store.retention.Milliseconds(), claim, cost, r.ID, msg, time.Now().UnixNano())
			return nil
		})
	}
	run()
	if isNoScript(cmd.Err()) {
		if err := submitScript.Load(ctx, q.rdb).Err(); err != nil {
			return Submitted{}, fmt.Errorf("jobs: loading the submit script: %w", err)
		}
		run()
	}
	reply, err := cmd.Slice()
	switch {
	case err != nil && isCrossSlot(err):
		// Nothing ran: Redis checks a script's keys before running it.
		q.split.Store(true)
		return q.submitSplit(ctx, r, rec, claim, cost, ks)
	case err != nil && isReply(err):
		// Refused or failed in Redis: the script writes nothing unless it writes it all.
		return Submitted{}, fmt.Errorf("jobs: submitting %s: %w", r.ID, err)
	case err != nil:
		// The reply was lost (a broken connection, a timeout): the script may have run, so it
		// is undone as a failed enqueue is; the undo takes back only what it finds.
		err = fmt.Errorf("jobs: submitting %s: %w", r.ID, err)
		if uerr := q.forget(ctx, []string{r.ID}, func(c context.Context) error {
			return undoScript.Run(c, q.rdb, ks, r.ID).Err()
		}); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return Submitted{}, err
	}
	if !published && queue.Err() == nil {
		q.published.Store(true)
	}
	out, created, err := decodeCreate(r.ID, reply)
	if err != nil || !created {
		return out, err
	}
	if len(reply) == 3 {
		out.Position, _ = reply[2].(int64)
	}
	return out, nil
}

// submitSplit is Submit in two round trips, for Redis Cluster: the create script with the queue
// length, then the enqueue script (enqueueMany), undoing the job when the enqueue fails.
func (q *Queue) submitSplit(ctx context.Context, r *Record, rec []byte, claim string, cost int64, ks []string) (Submitted, error) {
	var created *redis.Cmd
	var pending *redis.IntCmd
	run := func() error {
		_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			created = createScript.EvalSha(ctx, p, ks, rec, q.store.retention.Milliseconds(), claim, cost)
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
	out, ok, err := decodeCreate(r.ID, reply)
	if err != nil || !ok {
		return out, err
	}
	// The batch's enqueue script, which writes asynq's task as asynq.Client does with less work
	// per call. It skips a task that exists: then Ensure (an idempotent replay racing this
	// request) already enqueued this very job's task, which is success (undoing would lose the job).
	if err := q.enqueueMany(ctx, []*Record{r}); err != nil {
		// Undo with a fresh context: the request's may be what failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if uerr := undoScript.Run(cctx, q.rdb, ks, r.ID).Err(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the job: %w", uerr))
		}
		return Submitted{}, fmt.Errorf("jobs: enqueueing %s: %w", r.ID, err)
	}
	out.Position = pending.Val()
	return out, nil
}

// decodeCreate reads the {code, value} reply of createScript or submitScript; created reports
// a job created (out's Balance set), else out says why not (a replay, or out of credits).
func decodeCreate(id string, reply []any) (out Submitted, created bool, err error) {
	if len(reply) < 2 {
		return Submitted{}, false, fmt.Errorf("jobs: creating %s: unexpected reply %v", id, reply)
	}
	code, _ := reply[0].(int64)
	val, _ := reply[1].(string)
	switch code {
	case 0:
		if n, _ := strconv.ParseInt(val, 10, 64); n >= 0 {
			out.Balance = &n
		}
		return out, true, nil
	case 1:
		var c Claim
		if err := recjson.Unmarshal([]byte(val), &c); err != nil {
			return Submitted{}, false, fmt.Errorf("jobs: reading an idempotency claim: %w", err)
		}
		out.Replay = &c
		return out, false, nil
	case 2:
		n, _ := strconv.ParseInt(val, 10, 64)
		out.OutOfCredits, out.Balance = true, &n
		return out, false, nil
	case 3:
		return Submitted{}, false, fmt.Errorf("jobs: creating %s: %w", id, ErrExists)
	}
	return Submitted{}, false, fmt.Errorf("jobs: creating %s: unexpected reply %v", id, reply)
}

// Ensure enqueues the resolve task of the queued job r again unless it is already there.
// When Redis fails between Submit's create script and its enqueue, the undo usually fails
// too and leaves the record and its idempotency claim without a task; a client's retry with
// the same key then replays that job, and must get one that runs rather than one that stays
// queued forever. The job id is the task id, so an existing task is never duplicated.
func (q *Queue) Ensure(ctx context.Context, r Record) error {
	task, err := NewResolveTask(r.ID, r.KeyID, r.URL, q.opts)
	if err != nil {
		return err
	}
	if _, err := q.client.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("jobs: re-enqueueing %s: %w", r.ID, err)
	}
	return nil
}

// isCrossSlot reports whether a Redis Cluster node refused keys of different slots in one call.
func isCrossSlot(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "CROSSSLOT")
}

// isReply reports whether err is Redis's own error reply (the command reached Redis and was
// refused or failed there), as against a lost connection or a timeout.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// isNoScript reports whether Redis did not know a script's SHA (first use, or after a
// restart), as quota and resolve tell it: by the reply's error prefix, also when wrapped.
func isNoScript(err error) bool {
	return redis.HasErrorPrefix(err, "NOSCRIPT")
}
