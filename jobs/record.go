package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

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
	b, err := json.Marshal(r)
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
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("jobs: reading: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("jobs: decoding: %w", err)
	}
	return r, nil
}

// Delete removes a record (used to undo a job whose enqueue failed).
func (s *Store) Delete(ctx context.Context, keyID, id string) error {
	return s.rdb.Del(ctx, RecordKey(keyID, id)).Err()
}

// Update applies fn to the stored record atomically (optimistic WATCH/MULTI on one key) and
// keeps the record's expiry. fn may return ErrNoChange to write nothing.
func (s *Store) Update(ctx context.Context, keyID, id string, fn func(*Record) error) (Record, error) {
	key := RecordKey(keyID, id)
	var out Record
	for range 20 {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			r, err := Decode(tx.Get(ctx, key).Bytes())
			if err != nil {
				return err
			}
			if err := fn(&r); err != nil {
				out = r
				return err
			}
			r.UpdatedAt = now()
			b, err := json.Marshal(&r)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.SetArgs(ctx, key, b, redis.SetArgs{KeepTTL: true, Mode: "XX"})
				if r.refund > 0 {
					keys.AdjustCreditsIn(ctx, p, keyID, r.refund)
				}
				return nil
			})
			out = r
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if errors.Is(err, ErrNoChange) {
			return out, nil
		}
		return out, err
	}
	return out, fmt.Errorf("jobs: updating %s: too much contention", id)
}

// now is the service's clock for record timestamps: UTC with millisecond precision, the
// precision of the API's timestamps.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
