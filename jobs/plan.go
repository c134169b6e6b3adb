package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/quota"
	"github.com/linkhop/linkhop/resolve"
)

// thenSubmit is the submit of a job as the continuation of its request's admission (a
// quota.ThenScript), so that an accepted POST /v1/resolve is one round trip on a single Redis or
// through Sentinel (docs/benchmarks.md): the scope, the link's cache entry and the credit
// balance are read in the same step as the key's record and limits, and the job is submitted
// exactly as submitScript does (submitLua, the same Lua).
//
// K: submitLua's five keys, then the link's cache entry.
// A: the record JSON (encoded with no "credits_held" member), the byte offset in it where that
// member goes, retention in ms, claim JSON, the credit cost of the link, job id, task message,
// now in ns, the scope the request needs.
//
// The cost applies, and the record holds it as "credits_held", only when the key has a credit
// balance: f is the key's record as the admission read it. A key without one stores the record
// as sent: joining two halves in Lua would make a new string of the whole record, which
// Redis's Lua hashes byte by byte (docs/benchmarks.md). Reply: {4, ""} when the key lacks
// the scope, {5, the cache entry} when the link has one (nothing written either way), else
// submitLua's.
var thenSubmit = quota.NewThen(keys.HasScopeLua + keys.Script(submitLua+`
local function after_admit(K, A, f)
  if not has_scope(f[{{.Scopes}}], A[9]) then return {4, ''} end
  local c = redis.call('GET', K[6])
  if c then return {5, c} end
  local cost, rec = 0, A[1]
  if f[{{.Credits}}] then
    cost = A[5] + 0
    if cost > 0 then
      rec = string.sub(A[1], 1, A[2]) .. ',"credits_held":' .. A[5] .. string.sub(A[1], A[2] + 1)
    end
  end
  return submit(K, rec, A[3], A[4], cost, A[6], A[7], A[8], f[{{.Credits}}])
end
`))

// Reply codes of thenSubmit beyond createScript's.
const (
	codeNoScope = 4
	codeCached  = 5
)

// creditsMark is where a new record's "credits_held" member goes when it has one: right after
// "credits_charged", which is 0 for a new job (Record's field order; TestPlanRecordSplit).
var creditsMark = []byte(`"credits_charged":0`)

// Plan is the submit of one job prepared to ride in the admission of its request (Queue.Plan):
// Call goes into quota.AdmitRequest.Then, Pipe into the admission's pipeline, and then either
// Outcome reads the admission's reply or Failed handles a call that failed.
type Plan struct {
	q    *Queue
	r    *Record
	ks   []string // undoScript's keys
	call quota.ThenCall
	// published: asynq's set of queue names was written before; else Pipe writes it.
	published bool
	queue     *redis.IntCmd
}

// PlanOutcome is what a Plan's continuation found or did.
type PlanOutcome struct {
	// NoScope: the key lacks the scope the request needs; nothing was read or written.
	NoScope bool
	// Cached is the link's cache entry as read when it has one; nothing was written. The
	// caller decodes it (resolve.CacheEntry.Decode), and submits with Submit when it cannot
	// use it.
	Cached []byte
	// Submitted is the submit's outcome otherwise, as Submit's.
	Submitted
}

// Plan prepares the submit of job r (status queued) in the admission of its request: it runs,
// in the same Redis step, only for a key that is authenticated, admitted and has scope, and a
// link whose cache entry (cacheKey) is absent; cost is the credits the link costs a key with a
// balance (none is taken from a key without one). It returns nil when this Queue submits in two
// steps (Redis Cluster, where the job's slot and asynq's are apart): then Submit it after the
// admission.
func (q *Queue) Plan(ctx context.Context, r *Record, cost int64, scope, cacheKey string) *Plan {
	if q.split.Load() {
		return nil
	}
	r.queued()
	r.CreditsHeld = 0
	b, err := recjson.Marshal(r)
	if err != nil {
		return nil
	}
	i := bytes.Index(b, creditsMark)
	if i < 0 {
		return nil
	}
	i += len(creditsMark)
	msg, err := resolveTaskMessage(ctx, r.ID, r.KeyID, r.URL, q.opts)
	if err != nil {
		return nil
	}
	claim := ""
	if r.IdempotencyKey != "" {
		c, _ := recjson.Marshal(Claim{JobID: r.ID, URL: r.URL, WebhookURL: r.WebhookURL})
		claim = string(c)
	}
	ks := []string{RecordKey(r.KeyID, r.ID), idemKey(r.KeyID, r.IdempotencyKey), keys.RecordKey(r.KeyID)}
	return &Plan{q: q, r: r, ks: ks, published: q.published.Load(), call: quota.ThenCall{
		Script: thenSubmit,
		Keys:   []string{ks[0], ks[1], ks[2], pendingKey(QueueResolve), taskKey(QueueResolve, r.ID), cacheKey},
		Args: []any{b, i, q.store.retention.Milliseconds(), claim, cost, r.ID, msg,
			time.Now().UnixNano(), scope},
	}}
}

// Call is the continuation to run in the admission (quota.AdmitRequest.Then).
func (p *Plan) Call() *quota.ThenCall { return &p.call }

// Pipe adds to the admission's pipeline what the submit needs besides: asynq's set of queue
// names, written once per process (see enqueueMany).
func (p *Plan) Pipe(ctx context.Context, pipe redis.Pipeliner) {
	if !p.published {
		p.queue = pipe.SAdd(ctx, allQueuesKey, QueueResolve)
	}
}

// Failed handles an admission call that failed (err): retry reports that nothing ran because
// the server is a Redis Cluster node, which refuses the keys of several slots in one script;
// this Queue then submits in two steps from now on, and the caller admits again without the
// Plan. Otherwise a reply that was lost (a broken connection, a timeout) may follow a script
// that ran, so the job is taken back as a failed submit is (the undo takes back only what it
// finds); the error to report is returned.
func (p *Plan) Failed(ctx context.Context, err error) (retry bool, _ error) {
	if redis.HasErrorPrefix(err, "CROSSSLOT") {
		p.q.split.Store(true)
		return true, nil
	}
	err = fmt.Errorf("jobs: submitting %s: %w", p.r.ID, err)
	var re redis.Error
	if errors.As(err, &re) {
		// Refused or failed in Redis before the continuation ran: an error the continuation
		// raises comes in the reply (Outcome).
		return false, err
	}
	return false, p.forget(ctx, err)
}

// Undo takes the job back when the request ends without answering from the admission (the
// admission's reply could not be used): the undo takes back only what it finds.
func (p *Plan) Undo(ctx context.Context) error { return p.forget(ctx, nil) }

func (p *Plan) forget(ctx context.Context, err error) error {
	if uerr := p.q.forget(ctx, []string{p.r.ID}, func(c context.Context) error {
		return undoScript.Run(c, p.q.rdb, p.ks, p.r.ID).Err()
	}); uerr != nil {
		err = errors.Join(err, uerr)
	}
	return err
}

// Outcome reads what the continuation of an admitted request did: its reply and the error it
// raised (quota.Admission's Then and ThenErr). A
// created job is, with REDIS_MIN_REPLICAS_ACK, held by the replicas before Outcome returns, or
// taken back and an error returned, as Submit does; a continuation that failed is taken back
// too.
func (p *Plan) Outcome(ctx context.Context, then any, thenErr error) (PlanOutcome, error) {
	if p.queue != nil && p.queue.Err() == nil {
		p.q.published.Store(true)
	}
	id := p.r.ID
	if thenErr != nil {
		// submitLua checks everything before its first write, so nothing should be left; the
		// undo makes sure.
		return PlanOutcome{}, p.forget(ctx, fmt.Errorf("jobs: submitting %s: %w", id, thenErr))
	}
	reply, _ := then.([]any)
	if len(reply) < 2 {
		return PlanOutcome{}, p.forget(ctx, fmt.Errorf("jobs: submitting %s: unexpected reply %v", id, then))
	}
	switch code, _ := reply[0].(int64); code {
	case codeNoScope:
		return PlanOutcome{NoScope: true}, nil
	case codeCached:
		v, _ := reply[1].(string)
		return PlanOutcome{Cached: []byte(v)}, nil
	}
	out, created, err := decodeCreate(id, reply)
	if err != nil || !created {
		return PlanOutcome{Submitted: out}, err
	}
	if len(reply) == 3 {
		out.Position, _ = reply[2].(int64)
	}
	if p.q.ack.On() {
		if err := p.q.replicated(ctx, p.r.KeyID, []string{id}, func(c context.Context) error {
			return undoScript.Run(c, p.q.rdb, p.ks, id).Err()
		}); err != nil {
			return PlanOutcome{}, err
		}
	}
	return PlanOutcome{Submitted: out}, nil
}

// queued makes r a new queued job, as Submit and Plan store it.
func (r *Record) queued() {
	r.Status = StatusQueued
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now()
	}
	r.UpdatedAt = r.CreatedAt
	if r.Hops == nil {
		r.Hops = []resolve.Hop{}
	}
}
