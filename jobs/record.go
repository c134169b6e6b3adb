package jobs

import (
	"context"
	"crypto/sha1" //nolint:gosec // see casOf
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// Status is a job's state: queued → running → done|failed|invalid.
type Status string

// The job states of docs/api.md#get-v1jobsjob_id.
const (
	StatusQueued  Status = "queued"
	StatusRunning Status = "running"
	StatusDone    Status = "done"
	StatusFailed  Status = "failed"
	StatusInvalid Status = "invalid"
)

// Terminal reports whether s never changes again.
func (s Status) Terminal() bool {
	return s == StatusDone || s == StatusFailed || s == StatusInvalid
}

// Record is a job as stored in Redis. It belongs to one API key and is stored under that
// key's hash tag, so another key's job is simply not found.
type Record struct {
	ID             string          `json:"job_id"`
	KeyID          string          `json:"key_id"`
	Status         Status          `json:"status"`
	URL            string          `json:"url"`
	WebhookURL     string          `json:"webhook_url,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	TargetURL      *string         `json:"target_url"`
	Provider       string          `json:"provider"`
	Tier           string          `json:"tier"`
	Error          *string         `json:"error"`
	ErrorDetail    *string         `json:"error_detail"`
	CreditsCharged int64           `json:"credits_charged"`
	CreditsHeld    int64           `json:"credits_held,omitempty"`
	Attempts       int             `json:"attempts,omitempty"` // resolve attempts that reached the provider and failed transiently
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	CompletedAt    *time.Time      `json:"completed_at"`
	Hops           []resolve.Hop   `json:"hops"`
	Webhook        *webhooks.State `json:"webhook"`
	// Resume is a resolve parked on a provider's countdown, finished by the next run of the
	// job's task; never shown to clients.
	Resume *resolve.Continuation `json:"resume,omitempty"`
	// Task is the asynq task that runs the job when a reaper replaced the job's first task
	// (whose id is the job id) after its worker's lease lapsed; runs of any other task of the
	// job end without doing anything. Reaps counts those replacements. Never shown to clients.
	Task  string `json:"task,omitempty"`
	Reaps int    `json:"reaps,omitempty"`
	// WebhookTask is likewise the task of the current webhook delivery generation when a
	// reaper replaced it; empty for the generation's own task (NewWebhookTask's id).
	WebhookTask string `json:"webhook_task,omitempty"`

	// refund, set by an Update function, gives credits back to the key in the same
	// transaction that writes the record.
	refund int64
}

// RecordKey is the Redis key of job id of key keyID.
func RecordKey(keyID, id string) string { return keys.Tag(keyID) + ":job:" + id }

// Store reads and writes job records.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
}

// NewStore returns a Store whose records live for retention after creation.
func NewStore(rdb redis.UniversalClient, retention time.Duration) *Store {
	return &Store{rdb: rdb, retention: retention}
}

// Retention is how long a record lives after creation.
func (s *Store) Retention() time.Duration { return s.retention }

// Create stores a new record as it is (Submit is the way to create a queued job; this is for
// records made whole elsewhere, such as tests); it expires JOB_RETENTION after creation.
func (s *Store) Create(ctx context.Context, r *Record) error {
	b, err := recjson.Marshal(r)
	if err != nil {
		return fmt.Errorf("jobs: encoding %s: %w", r.ID, err)
	}
	ok, err := s.rdb.SetNX(ctx, RecordKey(r.KeyID, r.ID), b, s.retention).Result()
	if err != nil {
		return fmt.Errorf("jobs: storing %s: %w", r.ID, err)
	}
	if !ok {
		return fmt.Errorf("jobs: storing %s: %w", r.ID, ErrExists)
	}
	return nil
}

// Get reads job id of key keyID; ErrNotFound when it does not exist (or expired).
func (s *Store) Get(ctx context.Context, keyID, id string) (Record, error) {
	b, err := s.rdb.Get(ctx, RecordKey(keyID, id)).Bytes()
	return Decode(b, err)
}

// Decode turns the reply of a GET of RecordKey into a Record, for callers that read the record
// in a pipeline of their own.
func Decode(b []byte, err error) (Record, error) {
	snap, err := decodeSnapshot(b, err)
	return snap.Record, err
}

// Snapshot is a record as it was read, together with the bytes it was stored as: the base of
// an update that writes only if the stored bytes are still those (compare and set). An update
// from a snapshot is one round trip, and can share a pipeline with the caller's other calls
// (docs/benchmarks.md#the-worker-in-four-round-trips).
type Snapshot struct {
	Record
	raw []byte
}

func decodeSnapshot(b []byte, err error) (Snapshot, error) {
	if errors.Is(err, redis.Nil) {
		return Snapshot{}, ErrNotFound
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("jobs: reading: %w", err)
	}
	var r Record
	if err := recjson.Unmarshal(b, &r); err != nil {
		return Snapshot{}, fmt.Errorf("jobs: decoding: %w", err)
	}
	return Snapshot{Record: r, raw: b}, nil
}

// GetIn adds a read of job id of key keyID to pipeline p; the function returned decodes it
// once p has run (ErrNotFound when it does not exist).
func (s *Store) GetIn(ctx context.Context, p redis.Pipeliner, keyID, id string) func() (Snapshot, error) {
	cmd := p.Get(ctx, RecordKey(keyID, id))
	return func() (Snapshot, error) { return decodeSnapshot(cmd.Bytes()) }
}

// Delete removes a record (used to undo a job whose enqueue failed).
func (s *Store) Delete(ctx context.Context, keyID, id string) error {
	return s.rdb.Del(ctx, RecordKey(keyID, id)).Err()
}

// casScript is the one write of a record update: it stores ARGV[2] over KEYS[1] only if the
// SHA-1 of what KEYS[1] holds is still ARGV[1], the digest of the bytes the update read (so
// nothing changed since), keeping the record's expiry, and gives ARGV[3] credits back to the
// key record KEYS[2] when the key has a balance (a key switched to unlimited meanwhile must
// not grow a balance from a refund). The digest stands for the old bytes so that a write sends
// the record once, not twice; two different records of one job with one SHA-1 are not a case
// to meet (SHA-1 is what Redis's Lua offers). Reply: 1 written; the current bytes when they
// differ (the caller re-applies its change to them); nil when the record is gone. Record and
// key record share the key's hash tag, so this is one slot on Redis Cluster.
var casScript = redis.NewScript(keys.Script(casLua + "return 1"))

// casLua is casScript up to its reply (casDoneScript goes on from there).
const casLua = `local cur = redis.call('GET', KEYS[1])
if not cur then return false end
if redis.sha1hex(cur) ~= ARGV[1] then return cur end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
local refund = ARGV[3] + 0
if refund > 0 and redis.call('HEXISTS', KEYS[2], {{.Credits}}) == 1 then
  redis.call('HINCRBY', KEYS[2], {{.Credits}}, refund)
end
`

// maxConflicts bounds how often an update re-applies its change to a record that changed
// under it; two writers of one record at once are rare (a worker and a redelivery request).
const maxConflicts = 20

// Update applies fn to the stored record atomically and keeps the record's expiry: a read,
// then a compare-and-set, repeated if the record changed in between. fn may return
// ErrNoChange to write nothing; it may be called more than once.
func (s *Store) Update(ctx context.Context, keyID, id string, fn func(*Record) error) (Record, error) {
	snap, err := decodeSnapshot(s.rdb.Get(ctx, RecordKey(keyID, id)).Bytes())
	if err != nil {
		return Record{}, err
	}
	out, err := s.UpdateFrom(ctx, snap, fn)
	return out.Record, err
}

// UpdateFrom is Update from a record already read: one round trip unless the record changed
// since snap was read. It returns the record as written (or as it stood, when fn wrote
// nothing), the base of a next update.
func (s *Store) UpdateFrom(ctx context.Context, snap Snapshot, fn func(*Record) error) (Snapshot, error) {
	next, _, err := s.updateFrom(ctx, snap, fn, nil)
	return next, err
}

// updateFrom is UpdateFrom that, when td is set, completes td's task in the write that lands
// (casDoneScript); completed says it did.
func (s *Store) updateFrom(ctx context.Context, snap Snapshot, fn func(*Record) error, td *taskDone) (next Snapshot, completed bool, err error) {
	for range maxConflicts {
		w, err := s.prepare(snap, fn)
		if err != nil || w == nil {
			next, err := noWrite(snap, err)
			return next, false, err
		}
		w.done = td.use()
		next, done, err := w.settle(s.casAgain(ctx, w, casOf(ctx, s.rdb, w)))
		if done || err != nil {
			return next, w.completed, err
		}
		snap = next
	}
	return snap, false, fmt.Errorf("jobs: updating %s: too much contention", snap.ID)
}

// UpdateIn adds UpdateFrom's write to pipeline p. The function returned, called once p has
// run, gives the record as written (or as it stood, when fn wrote nothing); if the record had
// changed since snap, it re-applies fn to the current record in further round trips.
func (s *Store) UpdateIn(ctx context.Context, p redis.Pipeliner, snap Snapshot, fn func(*Record) error) func() (Snapshot, error) {
	update := s.updateIn(ctx, p, snap, fn, nil)
	return func() (Snapshot, error) {
		next, _, err := update()
		return next, err
	}
}

// updateIn is UpdateIn completing td's task as updateFrom does.
func (s *Store) updateIn(ctx context.Context, p redis.Pipeliner, snap Snapshot, fn func(*Record) error, td *taskDone) func() (Snapshot, bool, error) {
	w, err := s.prepare(snap, fn)
	if err != nil || w == nil {
		r, err := noWrite(snap, err)
		return func() (Snapshot, bool, error) { return r, false, err }
	}
	w.done = td.use()
	cmd := casOf(ctx, p, w)
	return func() (Snapshot, bool, error) {
		next, done, err := w.settle(s.casAgain(ctx, w, cmd))
		if done || err != nil {
			return next, w.completed, err
		}
		return s.updateFrom(ctx, next, fn, td)
	}
}

// write is one prepared compare-and-set.
type write struct {
	key, keyRecord string
	old, new       []byte
	rec            Record
	refund         int64
	// done, when set, is the asynq task the write completes too (casDoneScript); completed
	// says the write did.
	done      *taskDone
	completed bool
}

// prepare applies fn to a copy of snap's record. A nil write means fn wrote nothing
// (ErrNoChange) or failed; noWrite says which.
func (s *Store) prepare(snap Snapshot, fn func(*Record) error) (*write, error) {
	r := snap.Record
	if r.Webhook != nil {
		// fn may change the webhook state in place; the snapshot must stay as read.
		w := *r.Webhook
		r.Webhook = &w
	}
	if err := fn(&r); err != nil {
		if errors.Is(err, ErrNoChange) {
			return nil, nil
		}
		return nil, &fnError{rec: r, err: err}
	}
	r.UpdatedAt = now()
	refund := r.refund
	r.refund = 0
	b, err := recjson.Marshal(&r)
	if err != nil {
		return nil, fmt.Errorf("jobs: encoding %s: %w", r.ID, err)
	}
	return &write{key: RecordKey(r.KeyID, r.ID), keyRecord: keys.RecordKey(r.KeyID), old: snap.raw, new: b, rec: r, refund: refund}, nil
}

// fnError carries the record as fn left it along with fn's error, which Update returns
// unchanged (callers test it with errors.Is).
type fnError struct {
	rec Record
	err error
}

func (e *fnError) Error() string { return e.err.Error() }
func (e *fnError) Unwrap() error { return e.err }

// noWrite is the outcome of an update that wrote nothing: the record as read, or as fn left
// it with fn's own error.
func noWrite(snap Snapshot, err error) (Snapshot, error) {
	var fe *fnError
	if errors.As(err, &fe) {
		return Snapshot{Record: fe.rec, raw: snap.raw}, fe.err
	}
	return snap, err
}

func casOf(ctx context.Context, c redis.Scripter, w *write) *redis.Cmd {
	sum := sha1.Sum(w.old) //nolint:gosec // a change detector matched by Redis's redis.sha1hex, not a security use
	digest := hex.EncodeToString(sum[:])
	if td := w.done; td != nil {
		return casDoneScript.EvalSha(ctx, c, []string{w.key, w.keyRecord, td.active, td.lease, td.task, td.daily, td.total},
			digest, w.new, w.refund, td.id, td.statsExpire, maxInt64)
	}
	return casScript.EvalSha(ctx, c, []string{w.key, w.keyRecord}, digest, w.new, w.refund)
}

// casAgain runs w's compare-and-set again, alone, when Redis did not know the script (its
// first use, or after a restart): the pipeline it rode in ran without it. A write that was to
// complete its task on a server that keeps the job and the task in different slots (a Redis
// Cluster node: CROSSSLOT, refused before anything ran) is sent again without, and its
// process completes tasks the asynq way from then on.
func (s *Store) casAgain(ctx context.Context, w *write, cmd *redis.Cmd) *redis.Cmd {
	if w.done != nil && isCrossSlot(cmd.Err()) {
		w.done.c.off.Store(true)
		w.done = nil
		return s.casAgain(ctx, w, casOf(ctx, s.rdb, w))
	}
	if !isNoScript(cmd.Err()) {
		return cmd
	}
	script := casScript
	if w.done != nil {
		script = casDoneScript
	}
	if err := script.Load(ctx, s.rdb).Err(); err != nil {
		return cmd
	}
	return casOf(ctx, s.rdb, w)
}

// settle reads the reply of w's compare-and-set: done with the record written, or not done
// with the record as it now stands, to apply the change to again.
func (w *write) settle(cmd *redis.Cmd) (Snapshot, bool, error) {
	v, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return Snapshot{}, true, ErrNotFound
	}
	if err != nil {
		return Snapshot{}, true, fmt.Errorf("jobs: updating %s: %w", w.rec.ID, err)
	}
	if cur, ok := v.(string); ok {
		next, err := decodeSnapshot([]byte(cur), nil)
		return next, err != nil, err
	}
	w.completed = v == int64(2)
	return Snapshot{Record: w.rec, raw: w.new}, true, nil
}

// now is the service's clock for record timestamps: UTC with millisecond precision, the
// precision of the API's timestamps.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
