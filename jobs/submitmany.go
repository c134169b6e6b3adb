package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/jsonstr"
	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/quota"
	"github.com/linkhop/linkhop/resolve"
)

// submitManyScript is createManyScript and enqueueManyScript in one atomic step, for a Redis
// whose keys all live on one server (a single server, or Sentinel's primary), as submitScript is
// for a single job. Items are taken in order with the same rules as createManyScript (an
// earlier claim replays, a used-up quota refuses, credits never go below zero, a claim made by
// an item replays for a later item with the same key), but in two passes: the first decides
// every item with reads only, the second writes; the push on asynq's pending list is the
// second pass's first write, so a script that fails leaves nothing behind (after a first write
// Redis no longer refuses a script's writes for memory). A job id that exists is found by its
// record's SET NX, the writes just made (the push and the records before it) are taken back,
// and the batch is refused with nothing else written (submitMany refuses an id that two items
// name before sending anything). As in submitLua, no call is made that a write's own answer
// gives (the push answers the queue's length), and a new job's task hash is written without
// looking: its id is a random UUID whose record did not exist. The EXISTS of every record and
// task this replaces cost a batch about a tenth of its Redis time (docs/benchmarks.md).
//
// Only the key record, the day counter and the pending list are declared: the records, claims
// and task hashes are built here from the prefixes, which keeps the arguments to what an item
// has (Redis makes a Lua string of each, at a cost comparable to a command's). On Redis Cluster
// the three declared keys are in different slots, so the script is refused before it runs
// (CROSSSLOT) and the Queue takes the split path.
//
// KEYS: the key record, the day counter (quota.DayKey), asynq's pending list.
// ARGV: retention in ms, the job key prefix (RecordKey without the id), the task key prefix
// (taskKey without the id), now in ns, the items' flags (two bytes each: the kind, then "1" when
// the item has an idempotency key else "0"), their credit costs ("" when all are 0, else each
// item's, comma-separated), then per item: for a new job its id, record JSON and task message;
// for an item with an idempotency key its claim's key and JSON. The flags and costs are two
// arguments for the whole batch, and read with string.byte, because an argument or a string
// made in the script costs about as much as a small command.
//
// Reply: {-1} when a job id exists (nothing written), else {day_used, today, queue length before
// the push, the key's balance before the batch (-1 = none), the items' codes as a string of
// digits, {per replay: item number (from 1), claim, job (false when gone)}}. Each item's balance
// after it follows from the balance before, the costs and the codes (decodeSubmitMany).
var submitManyScript = redis.NewScript(submitManySrc)

var submitManySrc = quota.DayLua + keys.Script(`
local t = redis.call('TIME')
local today = math.floor(t[1] / 86400)
local kr = redis.call('HMGET', KEYS[1], {{.DailyQuota}}, {{.Credits}})
local quota = -1
if kr[1] then quota = kr[1] + 0 end
local bal = kr[2]
if bal then bal = bal + 0 end
local bal0 = -1
if bal then bal0 = bal end
local used, of_today = day_used(KEYS[2], today)
local used0 = used
local taken = 0
local flags = ARGV[5]
local costs = {}
for c in string.gmatch(ARGV[6], '-?%d+') do costs[#costs + 1] = c + 0 end
local codes, replays = {}, {}
local made, claims = {}, {}
local claimed = {}
local byte = string.byte
local a = 7
for i = 1, #flags / 2 do
  local kind, idem = byte(flags, 2 * i - 1), byte(flags, 2 * i) == 49
  local cost = costs[i] or 0
  local at = a
  if kind == 110 then a = a + 3 end
  local ic, prev, job = nil, false, false
  if idem then
    ic, a = a, a + 2
    local c = claimed[ARGV[ic]]
    if c then prev, job = ARGV[c + 1], ARGV[c - 2] else prev = redis.call('GET', ARGV[ic]) end
  end
  local full = quota >= 0 and used >= quota
  local code = '0'
  if kind == 114 and not full then
    code = '0'
  elseif prev then
    code = '1'
    if not job then job = redis.call('GET', ARGV[2] .. cjson.decode(prev).job_id) end
    replays[#replays + 1] = i
    replays[#replays + 1] = prev
    replays[#replays + 1] = job
  elseif full then
    code = '4'
  elseif kind == 99 then
    used = used + 1
  elseif cost > 0 and bal and bal < cost then
    code = '2'
  else
    made[#made + 1] = at
    if ic then
      claims[#claims + 1] = ic
      claimed[ARGV[ic]] = ic
    end
    if cost > 0 and bal then
      bal = bal - cost
      taken = taken + cost
    end
    used = used + 1
  end
  codes[i] = code
end
local pos = 0
if #made > 0 then
  local ids, rk, tk = {}, {}, {}
  for j, at in ipairs(made) do
    local id = ARGV[at]
    ids[j], rk[j], tk[j] = id, ARGV[2] .. id, ARGV[3] .. id
  end
  -- The first write: if it fails (the list is not a list), the script has written nothing.
  pos = redis.call('LPUSH', KEYS[3], unpack(ids)) - #ids
  for j, at in ipairs(made) do
    if not redis.call('SET', rk[j], ARGV[at + 1], 'NX', 'PX', ARGV[1]) then
      -- An id that exists: take back the records and the pushes, before any other write.
      for i = 1, j - 1 do redis.call('DEL', rk[i]) end
      for i = 1, #ids do redis.call('LREM', KEYS[3], 1, ids[i]) end
      return {-1}
    end
  end
  for j, at in ipairs(made) do
    redis.call('HSET', tk[j], 'msg', ARGV[at + 2], 'state', 'pending', 'pending_since', ARGV[4])
  end
  for _, ic in ipairs(claims) do redis.call('SET', ARGV[ic], ARGV[ic + 1], 'PX', ARGV[1]) end
end
if taken > 0 then redis.call('HINCRBY', KEYS[1], {{.Credits}}, -taken) end
if used ~= used0 then day_set(KEYS[2], today, used, of_today) end
-- The codes are strings from the start: table.concat prints a number with sprintf ('%.14g'),
-- which cost Redis about 2,000 instructions a link (docs/benchmarks.md).
return {used, today, pos, bal0, table.concat(codes), replays}`)

// submitMany is SubmitBatch in one round trip on a single Redis or through Sentinel:
// submitManyScript, with asynq's set of queue names written once per process (see enqueueMany),
// and a second round trip only for the queued jobs of replays (enqueueMany). A server that turns
// out to be a Cluster node makes this Queue take the split path from then on.
func (q *Queue) submitMany(ctx context.Context, keyID string, items []BatchItem) (BatchResult, error) {
	if err := distinctIDs(items); err != nil {
		return BatchResult{}, err
	}
	ks := []string{keys.RecordKey(keyID), quota.DayKey(keyID), pendingKey(QueueResolve)}
	args := make([]any, 6, 6+5*len(items))
	args[0], args[1], args[2], args[3] = q.store.retention.Milliseconds(), RecordKey(keyID, ""), taskKey(QueueResolve, ""), time.Now().UnixNano()
	flags := make([]byte, 0, 2*len(items))
	var costs []byte
	for i, it := range items {
		idem := byte('0')
		if it.Record.IdempotencyKey != "" {
			idem = '1'
		}
		flags = append(flags, byte(it.Kind), idem)
		if it.Cost != 0 && costs == nil {
			costs = make([]byte, 0, 2*len(items))
			for range i {
				costs = append(costs, "0,"...)
			}
		}
		if costs != nil {
			costs = append(strconv.AppendInt(costs, it.Cost, 10), ',')
		}
	}
	args[4], args[5] = string(flags), string(costs)
	created := now()
	var msgs taskMessages
	// The records and messages are encoded into one buffer and sent as slices of it (go-redis
	// writes a []byte argument as it is): no copy per argument. A slice stays valid when the
	// buffer grows, as it keeps the array it was cut from.
	buf := make([]byte, 0, 512*len(items))
	cut := func(from int) []byte { return buf[from:len(buf):len(buf)] }
	for _, it := range items {
		r := it.Record
		if it.Kind == BatchNew {
			prepareNew(r, keyID, it.Cost, created)
			from := len(buf)
			var rec []byte
			if b, ok := appendNewRecord(buf, r); ok {
				buf = b
				rec = cut(from)
			} else {
				var err error
				if rec, err = recjson.Marshal(r); err != nil {
					return BatchResult{}, fmt.Errorf("jobs: encoding %s: %w", r.ID, err)
				}
			}
			from = len(buf)
			m, err := msgs.append(ctx, buf, r.ID, keyID, r.URL, q.opts)
			if err != nil {
				return BatchResult{}, err
			}
			buf = m
			args = append(args, r.ID, rec, cut(from))
		}
		if r.IdempotencyKey != "" {
			c, _ := recjson.Marshal(Claim{JobID: r.ID, URL: r.URL, WebhookURL: r.WebhookURL})
			args = append(args, idemKey(keyID, r.IdempotencyKey), string(c))
		}
	}
	published := q.published.Load()
	var (
		cmd    *redis.Cmd
		queues *redis.IntCmd
	)
	run := func() {
		// Each reply is read on its own below.
		_, _ = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if !published {
				queues = p.SAdd(ctx, allQueuesKey, QueueResolve)
			}
			cmd = submitManyScript.EvalSha(ctx, p, ks, args...)
			return nil
		})
	}
	run()
	if isNoScript(cmd.Err()) {
		if err := submitManyScript.Load(ctx, q.rdb).Err(); err != nil {
			return BatchResult{}, fmt.Errorf("jobs: loading the submit-many script: %w", err)
		}
		run()
	}
	reply, err := cmd.Slice()
	switch {
	case err != nil && isCrossSlot(err):
		// Nothing ran: Redis checks a script's keys before running it.
		q.split.Store(true)
		return q.submitSplitBatch(ctx, keyID, items)
	case err != nil && isReply(err):
		// Refused or failed in Redis: the script writes nothing unless it writes it all.
		return BatchResult{}, fmt.Errorf("jobs: submitting a batch: %w", err)
	case err != nil:
		// The reply was lost (a broken connection, a timeout): the script may have run, so every
		// job it may have made is undone as a failed enqueue is; the undo takes back only what
		// it finds (a record, a claim still the job's, the credits a record holds).
		var maybe BatchResult
		var ids []string
		for _, it := range items {
			if it.Kind == BatchNew {
				maybe.created = append(maybe.created, it.Record)
				ids = append(ids, it.Record.ID)
			}
		}
		err = fmt.Errorf("jobs: submitting a batch: %w", err)
		if uerr := q.forget(ctx, ids, func(c context.Context) error { return q.undoMany(c, keyID, maybe) }); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return BatchResult{}, err
	}
	if !published && queues.Err() == nil {
		q.published.Store(true)
	}
	res, err := decodeSubmitMany(reply, items)
	if err != nil {
		return res, err
	}
	if again := replayedQueued(res); len(again) > 0 {
		if err := q.enqueueMany(ctx, again); err != nil {
			err = fmt.Errorf("jobs: enqueueing a batch: %w", err)
			ids := make([]string, len(res.created))
			for i, r := range res.created {
				ids[i] = r.ID
			}
			// The new jobs' tasks are queued already: they go with their records.
			if uerr := q.forget(ctx, ids, func(c context.Context) error { return q.undoMany(c, keyID, res) }); uerr != nil {
				err = errors.Join(err, uerr)
			}
			return res, err
		}
	}
	return res, nil
}

// distinctIDs refuses a batch whose new jobs do not all have ids of their own (ErrExists, as
// the second of two would find the first's record). A set in Go costs a fraction of one in the
// script.
func distinctIDs(items []BatchItem) error {
	seen := make(map[string]struct{}, len(items))
	for _, it := range items {
		if it.Kind != BatchNew {
			continue
		}
		if _, dup := seen[it.Record.ID]; dup {
			return fmt.Errorf("jobs: creating %s: %w", it.Record.ID, ErrExists)
		}
		seen[it.Record.ID] = struct{}{}
	}
	return nil
}

// prepareNew sets what a new job's record holds when it is created.
func prepareNew(r *Record, keyID string, cost int64, created time.Time) {
	r.KeyID, r.Status, r.CreditsHeld = keyID, StatusQueued, cost
	if r.CreatedAt.IsZero() {
		r.CreatedAt = created
	}
	r.UpdatedAt = r.CreatedAt
	if r.Hops == nil {
		r.Hops = []resolve.Hop{}
	}
}

// decodeSubmitMany reads submitManyScript's reply. A job id that exists is ErrExists with
// nothing created and nothing counted: the script wrote nothing.
func decodeSubmitMany(reply []any, items []BatchItem) (BatchResult, error) {
	bad := fmt.Errorf("jobs: unexpected reply from the submit-many script")
	if len(reply) == 1 {
		if code, _ := reply[0].(int64); code == -1 {
			return BatchResult{}, fmt.Errorf("jobs: creating a batch: %w", ErrExists)
		}
		return BatchResult{}, bad
	}
	if len(reply) != 6 {
		return BatchResult{}, bad
	}
	used, _ := reply[0].(int64)
	day, _ := reply[1].(int64)
	pending, _ := reply[2].(int64)
	bal, _ := reply[3].(int64)
	codes, _ := reply[4].(string)
	replays, _ := reply[5].([]any)
	if len(codes) != len(items) || len(replays)%3 != 0 {
		return BatchResult{}, bad
	}
	res := BatchResult{DayUsed: used, Day: day, Items: make([]BatchOutcome, len(items))}
	// The balances after each item, one allocation for all (a key with a balance only).
	var bals []int64
	if bal >= 0 {
		bals = make([]int64, len(items))
	}
	for i := range items {
		o := BatchOutcome{Code: BatchCode(codes[i] - '0')}
		switch o.Code {
		case BatchCreated:
			if items[i].Kind == BatchNew {
				o.Position = pending + int64(len(res.created))
				res.created = append(res.created, items[i].Record)
				if bals != nil && items[i].Cost > 0 {
					bal -= items[i].Cost
				}
			}
			if items[i].Kind != BatchRemoved {
				res.Counted++
			}
		case BatchReplay, BatchOutOfCredits, BatchQuotaExceeded:
		default:
			return BatchResult{}, bad
		}
		if bals != nil {
			bals[i] = bal
			o.Balance = &bals[i]
		}
		res.Items[i] = o
	}
	for j := 0; j < len(replays); j += 3 {
		n, _ := replays[j].(int64)
		if n < 1 || int(n) > len(items) || res.Items[n-1].Code != BatchReplay {
			return BatchResult{}, bad
		}
		o := &res.Items[n-1]
		s, _ := replays[j+1].(string)
		var c Claim
		if err := recjson.Unmarshal([]byte(s), &c); err != nil {
			return BatchResult{}, fmt.Errorf("jobs: reading an idempotency claim: %w", err)
		}
		o.Replay = &c
		if s, ok := replays[j+2].(string); ok {
			r, err := Decode([]byte(s), nil)
			if err != nil {
				return BatchResult{}, err
			}
			o.Replayed = &r
		}
	}
	for _, o := range res.Items {
		if o.Code == BatchReplay && o.Replay == nil {
			return BatchResult{}, bad
		}
	}
	return res, nil
}

// taskMessages appends the task messages of a batch's jobs, byte for byte resolveTaskMessage's,
// without encoding a payload struct per job by reflection: the payload's JSON is written by hand
// (jsonstr, as encoding/json writes strings), and what the batch's jobs share (the key, the
// request's trace context, the task options) is encoded once.
type taskMessages struct {
	keyID   string
	keyJSON []byte // `,"key_id":"…"`
	trace   []byte // `,"trace":{…}`, empty without a trace context
	tail    []byte // the fields after the task id: queue, retry, timeout
	payload []byte // scratch
	ready   bool
}

func (tm *taskMessages) append(ctx context.Context, b []byte, id, keyID, url string, o TaskOptions) ([]byte, error) {
	if !tm.ready || keyID != tm.keyID {
		tm.keyID, tm.ready = keyID, true
		tm.keyJSON = jsonstr.Append(append(tm.keyJSON[:0], `,"key_id":`...), keyID)
		tm.trace = tm.trace[:0]
		if tr := tracing.Inject(ctx); len(tr) > 0 {
			j, err := recjson.Marshal(tr)
			if err != nil {
				return nil, fmt.Errorf("jobs: encoding payload: %w", err)
			}
			tm.trace = append(append(tm.trace, `,"trace":`...), j...)
		}
		tm.tail = appendTaskTail(tm.tail[:0], o)
	}
	p := jsonstr.Append(append(tm.payload[:0], `{"job_id":`...), id)
	p = append(p, tm.keyJSON...)
	if url != "" {
		p = jsonstr.Append(append(p, `,"url":`...), url)
	}
	p = append(append(p, tm.trace...), '}')
	tm.payload = p
	return append(appendTaskHead(b, p, id), tm.tail...), nil
}
