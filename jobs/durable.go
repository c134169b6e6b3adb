package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/keys"
)

// RequireReplicas makes every submit wait, before it answers, until ack.Min replicas hold the
// job, its claim, its credits and its task (REDIS_MIN_REPLICAS_ACK); a submit they do not
// acknowledge in time is undone and fails, so a client is never told "accepted" about a job
// that a failover could still lose; docs/operations.md#durability-of-accepted-jobs.
func (q *Queue) RequireReplicas(ack replicas.Ack) { q.ack = ack }

// replicated waits for the replicas of the writes of a submit of key keyID's jobs ids, whose
// records and tasks are written by then. When they do not acknowledge, the jobs are forgotten.
func (q *Queue) replicated(ctx context.Context, keyID string, ids []string, undo func(context.Context) error) error {
	err := q.ack.Wait(ctx, q.rdb, keys.Tag(keyID), pendingKey(QueueResolve))
	if err == nil {
		return nil
	}
	if ferr := q.forget(ctx, ids, undo); ferr != nil {
		err = errors.Join(err, ferr)
	}
	return fmt.Errorf("jobs: the replicas did not acknowledge: %w", err)
}

// forget removes submitted jobs ids whose submit failed after their writes may have been made:
// undo removes the records (with claims and credits) and then the tasks go, so nothing is left
// behind: a worker that already took a task finds no record and drops it.
func (q *Queue) forget(ctx context.Context, ids []string, undo func(context.Context) error) error {
	// A fresh context: the request's may be what failed.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	var err error
	if uerr := undo(cctx); uerr != nil {
		err = fmt.Errorf("undoing the jobs: %w", uerr)
	}
	insp := asynq.NewInspectorFromRedisClient(q.rdb)
	for _, id := range ids {
		if derr := insp.DeleteTask(QueueResolve, id); derr != nil && !errors.Is(derr, asynq.ErrTaskNotFound) {
			err = errors.Join(err, fmt.Errorf("deleting the task of %s: %w", id, derr))
		}
	}
	return err
}

// Replicated wraps a task handler of the worker so that, with REDIS_MIN_REPLICAS_ACK on, a
// run that succeeded ends only once ack.Min replicas hold what it wrote to its job's record;
// docs/operations.md#durability-of-accepted-jobs. Without it a failover can keep the task's
// completion (asynq's queues may live on another Cluster primary than the record) and lose
// the record's, leaving a job running, or a webhook pending, with no task to finish it. When
// the replicas do not acknowledge, the run returns an error, so asynq runs the task again
// and the handler finishes (or redoes) what the record lacks.
func Replicated(h asynq.Handler, rdb redis.UniversalClient, ack replicas.Ack) asynq.Handler {
	if !ack.On() {
		return h
	}
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if err := h.ProcessTask(ctx, t); err != nil {
			return err
		}
		var p struct {
			KeyID string `json:"key_id"`
		}
		if json.Unmarshal(t.Payload(), &p) != nil || p.KeyID == "" {
			return nil
		}
		if err := ack.Wait(ctx, rdb, keys.Tag(p.KeyID)); err != nil {
			return fmt.Errorf("jobs: the replicas did not acknowledge a finished run: %w", err)
		}
		return nil
	})
}
