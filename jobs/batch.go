package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/quota"
)

// Batch sizes (docs/api.md#post-v1resolvebatch): BATCH_MAX_ITEMS defaults to
// DefaultBatchMaxItems and may be raised to HardMaxBatchItems. They live here, with the
// submission of a batch, so that config can refer to them without depending on the HTTP layer.
const (
	DefaultBatchMaxItems = 100
	HardMaxBatchItems    = 1000
)

// BatchKind says what SubmitBatch does with an item.
type BatchKind byte

// The kinds of batch items: what the API learned of the link before creating anything.
const (
	// BatchNew creates the item's job (queued) unless its idempotency key replays.
	BatchNew BatchKind = 'n'
	// BatchCached counts an answer from the resolve cache: no job, no credits.
	BatchCached BatchKind = 'c'
	// BatchRemoved is a link the negative cache knows as removed: it takes nothing, but is
	// answered quota_exceeded (or its replay) when the quota is used up, as a single request.
	BatchRemoved BatchKind = 'r'
)

// BatchItem is one link of SubmitBatch, already admitted by the per-minute limit.
type BatchItem struct {
	Kind BatchKind
	// Record is the job to create (BatchNew: ID, KeyID, URL, WebhookURL, IdempotencyKey,
	// Provider, Tier); for the other kinds only URL, WebhookURL and IdempotencyKey are read, for
	// the idempotency claim.
	Record *Record
	// Cost is the credits the job takes from a key with a balance (0 for a key without one).
	Cost int64
}

// BatchCode is what became of one item.
type BatchCode int

// The outcomes of a batch item, as the create-many script reports them.
const (
	// BatchCreated: the job was created (BatchNew), or the cached answer counted (BatchCached),
	// or the removed link may be answered link_removed (BatchRemoved).
	BatchCreated BatchCode = 0
	// BatchReplay: the idempotency key was used before; nothing was taken.
	BatchReplay BatchCode = 1
	// BatchOutOfCredits: the balance is below the item's cost; nothing was taken.
	BatchOutOfCredits BatchCode = 2
	// BatchQuotaExceeded: the daily quota is used up; nothing was taken.
	BatchQuotaExceeded BatchCode = 4
)

// BatchOutcome is the outcome of one item.
type BatchOutcome struct {
	Code BatchCode
	// Replay is the earlier claim (BatchReplay), and Replayed its job as it is now (nil when the
	// job is gone).
	Replay   *Claim
	Replayed *Record
	// Balance is the key's credit balance after this item, nil for a key without one.
	Balance *int64
	// Position is the queue position hint of a created job.
	Position int64
}

// BatchResult is the outcome of SubmitBatch.
type BatchResult struct {
	Items []BatchOutcome
	// DayUsed is the key's count of accepted resolves after the batch, on UTC day Day.
	DayUsed, Day int64
	// Counted is how many items took a unit of the daily quota (created or cached).
	Counted int64

	created []*Record // the jobs created, for the enqueue and its undo
}

// createManyScript takes a batch's items in order in one atomic step under the API key's hash
// tag, each as createScript and the daily quota would take it for a single request: an earlier
// idempotency claim replays (and nothing is taken); a used-up daily quota refuses the item; a
// new job takes its credits (never below zero) and is stored with its claim; created jobs and
// cached answers take a unit of the day counter (quota.DayLua). Because every item reads the
// counter and the balance that the items before it left, a batch never overshoots either, and a
// claim made by an item is replayed by a later item with the same key.
//
// KEYS: the key record, the day counter (quota.DayKey), then per item its job record (a new
// job's only) and its idempotency key (an item with one only).
// ARGV: retention in ms, the job key prefix (RecordKey without the id), then per item: a head
// (kind, "1" when the item has an idempotency key else "0", credit cost: "n01"), the record
// JSON (a new job's only), the claim JSON (an item with an idempotency key only). Redis makes a
// Lua string of every argument, at a cost comparable to a command's, so an item sends only what
// it has.
//
// Reply: {day_used, today, {per item: {code, balance (-1 = none), replayed claim, replayed job}}},
// code 3 for a job id that exists (never for fresh UUIDs; the batch is then undone).
//
// The replayed job's key is built here from the claim's job id: it is only known inside the
// script, and the prefix carries the API key's hash tag, so the key is in the script's slot.
var createManyScript = redis.NewScript(quota.DayLua + keys.Script(`
local t = redis.call('TIME')
local today = math.floor(t[1] / 86400)
local quota = -1
local q = redis.call('HGET', KEYS[1], {{.DailyQuota}})
if q then quota = q + 0 end
local used, of_today = day_used(KEYS[2], today)
local used0 = used
local bal = redis.call('HGET', KEYS[1], {{.Credits}})
if bal then bal = bal + 0 end
local taken = 0
local out = {}
local a, k, i = 3, 3, 0
while a <= #ARGV do
  i = i + 1
  local head = ARGV[a]
  a = a + 1
  local kind, cost = string.sub(head, 1, 1), string.sub(head, 3) + 0
  local rec, jk, claim, ik = '', nil, '', nil
  if kind == 'n' then
    rec, jk, a, k = ARGV[a], KEYS[k], a + 1, k + 1
  end
  if string.sub(head, 2, 2) == '1' then
    claim, ik, a, k = ARGV[a], KEYS[k], a + 1, k + 1
  end
  local prev = false
  if claim ~= '' then prev = redis.call('GET', ik) end
  local full = quota >= 0 and used >= quota
  local code = 0
  local job = false
  if kind == 'r' and not full then
    code = 0
  elseif prev then
    code = 1
    job = redis.call('GET', ARGV[2] .. cjson.decode(prev).job_id)
  elseif full then
    code = 4
  elseif kind == 'c' then
    used = used + 1
  elseif cost > 0 and bal and bal < cost then
    code = 2
  elseif not redis.call('SET', jk, rec, 'NX', 'PX', ARGV[1]) then
    code = 3
  else
    if claim ~= '' then redis.call('SET', ik, claim, 'PX', ARGV[1]) end
    if cost > 0 and bal then
      bal = bal - cost
      taken = taken + cost
    end
    used = used + 1
  end
  local b = -1
  if bal then b = bal end
  out[i] = {code, b, prev, job}
end
if taken > 0 then redis.call('HINCRBY', KEYS[1], {{.Credits}}, -taken) end
if used ~= used0 then day_set(KEYS[2], today, used, of_today) end
return {used, today, out}`))

// undoManyScript removes what createManyScript made for jobs whose enqueue failed or whose
// replicas did not acknowledge them: records, claims still theirs, and the credits each record
// still holds (to a key that still has a balance). As undoScript, the credits come from the
// records rather than from the caller: nothing goes back for a job a worker already settled
// (charged or refunded), so nothing is given back twice.
// KEYS: the key record, then per job its record and idempotency key (the key record when it
// has none). ARGV: per job its id and "1" when it has an idempotency key.
var undoManyScript = redis.NewScript(keys.Script(`
local back = 0
for i = 1, #ARGV / 2 do
  local rec = redis.call('GET', KEYS[2 * i])
  redis.call('DEL', KEYS[2 * i])
  if ARGV[2 * i] == '1' then
    local c = redis.call('GET', KEYS[2 * i + 1])
    if c and cjson.decode(c).job_id == ARGV[2 * i - 1] then redis.call('DEL', KEYS[2 * i + 1]) end
  end
  if rec then back = back + (tonumber(cjson.decode(rec).credits_held) or 0) end
end
if back > 0 and redis.call('HEXISTS', KEYS[1], {{.Credits}}) == 1 then
  redis.call('HINCRBY', KEYS[1], {{.Credits}}, back)
end
return 0`))

// enqueueManyScript enqueues resolve tasks in asynq's own layout, as asynq's enqueue script does
// for one: a task hash {msg, state = pending, pending_since} and its id pushed on the pending
// list, skipped when the task exists (the job id is the task id, so a task is never duplicated).
// asynq's Client enqueues one task per round trip; this is the same write for many in one.
// KEYS: the pending list, then each task's hash. ARGV: now in ns, then per task: id, message.
//
// One EXISTS of all the task keys first: it is 0 in the common case (every task new), which
// spares a call per task; Redis's per-call overhead in a script is several times the lookup's.
var enqueueManyScript = redis.NewScript(`
local ids, at = {}, {}
local any = redis.call('EXISTS', unpack(KEYS, 2)) > 0
for i = 2, #KEYS do
  if not any or redis.call('EXISTS', KEYS[i]) == 0 then
    ids[#ids + 1] = ARGV[2 * i - 2]
    at[#at + 1] = i
  end
end
if #ids == 0 then return 0 end
-- The push comes first: if it fails (the list is not a list), the script has written nothing.
redis.call('LPUSH', KEYS[1], unpack(ids))
for _, i in ipairs(at) do
  redis.call('HSET', KEYS[i], 'msg', ARGV[2 * i - 1], 'state', 'pending', 'pending_since', ARGV[1])
end
return #ids`)

// asynq's key names (internal to asynq, stable since v0.18 like pendingKey): the set of
// queue names its Inspector lists, and one task's hash.
const allQueuesKey = "asynq:queues"

// PublishQueues writes linkhop's queue names to asynq's set of queues, which its Inspector
// (the queue metrics, the queue UI) lists. asynq's Client, and a Queue, write a name once per
// process; a failover to a replica that had not received that write loses it until the next
// process starts, and the queue disappears from the metrics (and from a scaler reading them)
// while its tasks still run. The queue metrics call this at every scrape, so the set heals.
func PublishQueues(ctx context.Context, rdb redis.UniversalClient) error {
	return rdb.SAdd(ctx, allQueuesKey, QueueResolve, QueueWebhooks).Err()
}

func taskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// resolveTaskMessage is the asynq task message of job id's resolve task, encoded as asynq
// stores it (its TaskMessage protobuf), with the options NewResolveTask gives the task:
// type, payload, id, queue, retry and timeout in seconds; no deadline, no uniqueness, no
// retention. TestEnqueueManyMatchesAsynq holds the two to the same task.
func resolveTaskMessage(ctx context.Context, id, keyID, url string, o TaskOptions) ([]byte, error) {
	payload, err := recjson.Marshal(ResolvePayload{JobID: id, KeyID: keyID, URL: url, Trace: tracing.Inject(ctx)})
	if err != nil {
		return nil, fmt.Errorf("jobs: encoding payload: %w", err)
	}
	return appendTaskTail(appendTaskHead(nil, payload, id), o), nil
}

// appendTaskHead appends the fields of a resolve task message before its queue: type, payload
// and task id (asynq's TaskMessage fields 1–3).
func appendTaskHead(b, payload []byte, id string) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, TypeResolve)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, payload)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, id)
}

// appendTaskTail appends the fields after the task id: the queue, the retry count and the
// timeout in seconds (fields 4, 5 and 8), as NewResolveTask's options give them.
func appendTaskTail(b []byte, o TaskOptions) []byte {
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, QueueResolve)
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(max(o.MaxAttempts, 1)+infraRetries))
	b = protowire.AppendTag(b, 8, protowire.VarintType)
	return protowire.AppendVarint(b, uint64((max(o.Timeout, time.Second)+10*time.Second)/time.Second))
}

// SubmitBatch creates the jobs of a batch and enqueues their tasks. Items are taken in order
// (see createManyScript). On a single Redis or through Sentinel that is one round trip, one
// script that creates the jobs and enqueues their tasks (submitMany); on Redis Cluster, where
// the key's slot and asynq's are on different nodes, two: the create script with the queue
// length, then one script that enqueues every new task (submitSplitBatch). The queued jobs of
// replays are enqueued again unless their tasks exist (as Ensure does), in the second script or,
// on a single Redis, in a round trip of their own when there are any. If the enqueue fails,
// every job is undone and the error returned; the units of the daily quota the batch counted
// are then the caller's to give back (BatchResult.Counted on day BatchResult.Day), as only the
// limiter may write its counter.
func (q *Queue) SubmitBatch(ctx context.Context, keyID string, items []BatchItem) (BatchResult, error) {
	var res BatchResult
	var err error
	if q.split.Load() {
		res, err = q.submitSplitBatch(ctx, keyID, items)
	} else {
		res, err = q.submitMany(ctx, keyID, items)
	}
	if err != nil {
		return res, err
	}
	if q.ack.On() && len(res.created) > 0 {
		ids := make([]string, len(res.created))
		for i, r := range res.created {
			ids[i] = r.ID
		}
		if err := q.replicated(ctx, keyID, ids, func(c context.Context) error { return q.undoMany(c, keyID, res) }); err != nil {
			return res, err
		}
	}
	return res, nil
}

// replayedQueued returns the queued jobs that res's replays name and that res did not create:
// their tasks are enqueued again unless they exist (see Ensure).
func replayedQueued(res BatchResult) []*Record {
	var out []*Record
	var seen map[string]bool
	for _, o := range res.Items {
		if o.Code != BatchReplay || o.Replayed == nil || o.Replayed.Status != StatusQueued {
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
			for _, r := range res.created {
				seen[r.ID] = true
			}
		}
		if !seen[o.Replayed.ID] {
			seen[o.Replayed.ID] = true
			out = append(out, o.Replayed)
		}
	}
	return out
}

// submitSplitBatch is SubmitBatch in two round trips, for Redis Cluster: createManyScript with
// the queue length, then enqueueManyScript for the new jobs and the queued jobs of replays.
func (q *Queue) submitSplitBatch(ctx context.Context, keyID string, items []BatchItem) (BatchResult, error) {
	res, err := q.createMany(ctx, keyID, items)
	if errors.Is(err, ErrExists) {
		if uerr := q.undoMany(ctx, keyID, res); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the jobs: %w", uerr))
		}
	}
	if err != nil {
		return res, err
	}
	ensure := append(res.created[:len(res.created):len(res.created)], replayedQueued(res)...)
	if err := q.enqueueMany(ctx, ensure); err != nil {
		if uerr := q.undoMany(ctx, keyID, res); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the jobs: %w", uerr))
		}
		return res, fmt.Errorf("jobs: enqueueing a batch: %w", err)
	}
	return res, nil
}

func (q *Queue) createMany(ctx context.Context, keyID string, items []BatchItem) (BatchResult, error) {
	ks := make([]string, 0, 2+2*len(items))
	ks = append(ks, keys.RecordKey(keyID), quota.DayKey(keyID))
	args := make([]any, 0, 2+4*len(items))
	args = append(args, q.store.retention.Milliseconds(), RecordKey(keyID, ""))
	created := now()
	var buf []byte // the records' encoding, reused: each becomes a string argument
	for _, it := range items {
		r := it.Record
		var head [24]byte
		h := append(head[:0], byte(it.Kind), '0')
		if r.IdempotencyKey != "" {
			h[1] = '1'
		}
		args = append(args, string(strconv.AppendInt(h, it.Cost, 10)))
		if it.Kind == BatchNew {
			prepareNew(r, keyID, it.Cost, created)
			b, ok := appendNewRecord(buf[:0], r)
			if !ok {
				var err error
				if b, err = recjson.Marshal(r); err != nil {
					return BatchResult{}, fmt.Errorf("jobs: encoding %s: %w", r.ID, err)
				}
			} else {
				buf = b
			}
			ks, args = append(ks, RecordKey(keyID, r.ID)), append(args, string(b))
		}
		if r.IdempotencyKey != "" {
			c, _ := recjson.Marshal(Claim{JobID: r.ID, URL: r.URL, WebhookURL: r.WebhookURL})
			ks, args = append(ks, idemKey(keyID, r.IdempotencyKey)), append(args, string(c))
		}
	}
	var cmd *redis.Cmd
	var pending *redis.IntCmd
	run := func() {
		_, _ = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = createManyScript.EvalSha(ctx, p, ks, args...)
			pending = p.LLen(ctx, pendingKey(QueueResolve))
			return nil
		})
	}
	run()
	if isNoScript(cmd.Err()) {
		if err := loadScripts(ctx, q.rdb, createManyScript, undoManyScript, enqueueManyScript); err != nil {
			return BatchResult{}, err
		}
		run()
	}
	reply, err := cmd.Slice()
	if err != nil {
		return BatchResult{}, fmt.Errorf("jobs: creating a batch: %w", err)
	}
	return decodeCreateMany(reply, items, pending.Val())
}

// decodeCreateMany reads createManyScript's reply.
func decodeCreateMany(reply []any, items []BatchItem, pending int64) (BatchResult, error) {
	bad := fmt.Errorf("jobs: unexpected reply from the create-many script")
	if len(reply) != 3 {
		return BatchResult{}, bad
	}
	used, _ := reply[0].(int64)
	day, _ := reply[1].(int64)
	outs, _ := reply[2].([]any)
	if len(outs) != len(items) {
		return BatchResult{}, bad
	}
	res := BatchResult{DayUsed: used, Day: day, Items: make([]BatchOutcome, len(items))}
	var exists error
	for i, raw := range outs {
		v, _ := raw.([]any)
		if len(v) != 4 {
			return BatchResult{}, bad
		}
		code, _ := v[0].(int64)
		o := BatchOutcome{Code: BatchCode(code)}
		if b, _ := v[1].(int64); b >= 0 {
			o.Balance = &b
		}
		switch o.Code {
		case BatchCreated:
			if items[i].Kind == BatchNew {
				o.Position = pending + int64(len(res.created))
				res.created = append(res.created, items[i].Record)
			}
			if items[i].Kind != BatchRemoved {
				res.Counted++
			}
		case BatchReplay:
			s, _ := v[2].(string)
			var c Claim
			if err := recjson.Unmarshal([]byte(s), &c); err != nil {
				return BatchResult{}, fmt.Errorf("jobs: reading an idempotency claim: %w", err)
			}
			o.Replay = &c
			if s, ok := v[3].(string); ok {
				r, err := Decode([]byte(s), nil)
				if err != nil {
					return BatchResult{}, err
				}
				o.Replayed = &r
			}
		case BatchOutOfCredits, BatchQuotaExceeded:
		case 3:
			exists = fmt.Errorf("jobs: creating %s: %w", items[i].Record.ID, ErrExists)
		default:
			return BatchResult{}, bad
		}
		res.Items[i] = o
	}
	// The jobs created before and after an existing id are in res, for the caller's undo.
	return res, exists
}

// enqueueMany enqueues the resolve tasks of recs in one round trip (none for no records).
func (q *Queue) enqueueMany(ctx context.Context, recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	ks := make([]string, 0, 1+len(recs))
	ks = append(ks, pendingKey(QueueResolve))
	args := make([]any, 0, 1+2*len(recs))
	args = append(args, time.Now().UnixNano())
	for _, r := range recs {
		msg, err := resolveTaskMessage(ctx, r.ID, r.KeyID, r.URL, q.opts)
		if err != nil {
			return err
		}
		ks = append(ks, taskKey(QueueResolve, r.ID))
		args = append(args, r.ID, msg)
	}
	var cmd *redis.Cmd
	published := q.published.Load()
	run := func() error {
		_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			// What asynq's Client does once per process, so its Inspector (and the queue UI)
			// lists the queue even when only linkhop's script has filled it.
			if !published {
				p.SAdd(ctx, allQueuesKey, QueueResolve)
			}
			cmd = enqueueManyScript.EvalSha(ctx, p, ks, args...)
			return nil
		})
		return err
	}
	err := run()
	if isNoScript(cmd.Err()) {
		if lerr := enqueueManyScript.Load(ctx, q.rdb).Err(); lerr != nil {
			return fmt.Errorf("jobs: loading the enqueue script: %w", lerr)
		}
		err = run()
	}
	if err != nil {
		return err
	}
	if !published {
		q.published.Store(true)
	}
	return cmd.Err()
}

// undoMany removes the jobs res created, with a fresh context: the request's may be what failed.
func (q *Queue) undoMany(ctx context.Context, keyID string, res BatchResult) error {
	if len(res.created) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	ks := []string{keys.RecordKey(keyID)}
	var args []any
	for _, r := range res.created {
		ik, claimed := keys.RecordKey(keyID), "0"
		if r.IdempotencyKey != "" {
			ik, claimed = idemKey(keyID, r.IdempotencyKey), "1"
		}
		ks = append(ks, RecordKey(keyID, r.ID), ik)
		args = append(args, r.ID, claimed)
	}
	return undoManyScript.Run(cctx, q.rdb, ks, args...).Err()
}

// loadScripts loads scripts into Redis after a NOSCRIPT.
func loadScripts(ctx context.Context, rdb redis.UniversalClient, scripts ...*redis.Script) error {
	for _, s := range scripts {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("jobs: loading scripts: %w", err)
		}
	}
	return nil
}
