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
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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
}

// TaskOptions are the asynq settings of resolve tasks, from RESOLVE_* configuration.
type TaskOptions struct {
	MaxAttempts int           // RESOLVE_MAX_ATTEMPTS
	Timeout     time.Duration // RESOLVE_TIMEOUT; the task gets a margin above it
	// Webhooks is the WEBHOOK_* policy, for the tasks of redeliveries.
	Webhooks webhooks.Policy
}

// NewResolveTask builds the task of job jobID.
func NewResolveTask(jobID, keyID string, o TaskOptions) (*asynq.Task, error) {
	b, err := json.Marshal(ResolvePayload{JobID: jobID, KeyID: keyID})
	if err != nil {
		return nil, fmt.Errorf("jobs: encoding payload: %w", err)
	}
	attempts := max(o.MaxAttempts, 1)
	timeout := max(o.Timeout, time.Second)
	return asynq.NewTask(TypeResolve, b,
		asynq.TaskID(jobID),
		asynq.Queue(QueueResolve),
		asynq.MaxRetry(attempts-1),
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
}

// NewQueue returns a Queue on rdb.
func NewQueue(rdb redis.UniversalClient, store *Store, o TaskOptions) *Queue {
	return &Queue{store: store, client: asynq.NewClientFromRedisClient(rdb), rdb: rdb, opts: o}
}

// pendingKey is asynq's list of pending tasks of a queue (asynq internal naming, stable since
// v0.18); reading its length is cheaper than the Inspector's full queue statistics.
func pendingKey(queue string) string { return "asynq:{" + queue + "}:pending" }

// Submit stores r (status queued) and enqueues its resolve task. It returns the number of
// tasks ahead of it in the queue, a hint for the client.
func (q *Queue) Submit(ctx context.Context, r *Record) (position int64, err error) {
	task, err := NewResolveTask(r.ID, r.KeyID, q.opts)
	if err != nil {
		return 0, err
	}
	r.Status = StatusQueued
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now()
	}
	r.UpdatedAt = r.CreatedAt
	if r.Hops == nil {
		r.Hops = []resolve.Hop{}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("jobs: encoding %s: %w", r.ID, err)
	}
	// One round trip: the record and the queue length (the position hint) together.
	var created *redis.BoolCmd
	var pending *redis.IntCmd
	_, err = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		created = p.SetNX(ctx, RecordKey(r.KeyID, r.ID), b, q.store.retention)
		pending = p.LLen(ctx, pendingKey(QueueResolve))
		return nil
	})
	// Only the record's write matters; the position is a hint and its error is ignored.
	_ = err
	if err := created.Err(); err != nil {
		return 0, fmt.Errorf("jobs: storing %s: %w", r.ID, err)
	}
	if !created.Val() {
		return 0, fmt.Errorf("jobs: storing %s: %w", r.ID, ErrExists)
	}
	if _, err := q.client.EnqueueContext(ctx, task); err != nil {
		// Undo with a fresh context: the request's may be what failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if derr := q.store.Delete(cctx, r.KeyID, r.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("undoing the record: %w", derr))
		}
		return 0, fmt.Errorf("jobs: enqueueing %s: %w", r.ID, err)
	}
	return pending.Val(), nil
}
