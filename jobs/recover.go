package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/resolve"
)

// maxReaps is how many times a job's run may be lost with its worker before the job fails
// instead of being queued again: a link that kills every worker that resolves it (a poison
// pill) must not take the workers down one after the other forever.
const maxReaps = 3

// taskIDOf is the id of the asynq task being run, or fallback outside asynq (tests that call
// a handler directly run the job's own task).
func taskIDOf(ctx context.Context, fallback string) string {
	if id, ok := asynq.GetTaskID(ctx); ok {
		return id
	}
	return fallback
}

// owns reports whether the run of task may work on job r: the job's own task (its id is the
// job id) until a reaper replaces it, then the replacement.
func owns(r *Record, task string) bool {
	if r.Task == "" {
		return task == r.ID
	}
	return task == r.Task
}

// replacementID is the id of the task that replaces the run of lapsed lease ref: derived from
// the lease, so that two reapers of one lease queue one task.
func replacementID(ref LeaseRef) string {
	return ref.Task + "~" + ref.Token[:12]
}

// IsLeaseExpired reports whether err is asynq's own recovery of a task whose worker stopped
// heartbeating. For linkhop that is no failure: the job was usually queued again by a reaper
// long before, and the handed-back task ends at once with nothing to do (or, when no lease
// was taken yet, runs the job). Register it with Worker.NotFailure, so that such a task
// spends no retry and is not counted as failed in the queue's statistics.
func IsLeaseExpired(err error) bool { return errors.Is(err, asynq.ErrLeaseExpired) }

// Reap is the ReapFunc of resolve leases: it queues the job of a run whose worker stopped
// refreshing its lease under a new task, which from then on owns the job, unless the job
// finished meanwhile or another run already owns it. A job parked on a countdown is queued
// for the end of the countdown. After maxReaps replacements the job fails instead.
func (h *ResolveHandler) Reap(ctx context.Context, ref LeaseRef) error {
	next := replacementID(ref)
	requeue, failed := false, false
	rec, err := h.Store.Update(ctx, ref.KeyID, ref.JobID, func(r *Record) error {
		requeue, failed = false, false
		if r.Status.Terminal() {
			return ErrNoChange
		}
		switch {
		case owns(r, ref.Task):
		case r.Task == next:
			requeue = true // a reaper of this lease got this far and no further
			return ErrNoChange
		default:
			return ErrNoChange // a run of a replaced task; its replacement is live or reaped
		}
		r.Reaps++
		if r.Reaps > maxReaps {
			failed = true
			finish(r, resolve.Result{}, &resolve.Error{Code: resolve.CodeResolveFailed,
				Detail: "the workers resolving this link stopped before finishing it " + strconv.Itoa(maxReaps+1) + " times"})
			return nil
		}
		r.Task, requeue = next, true
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if failed {
		h.Logger.Error("job failed: its workers kept stopping while resolving it", "job_id", ref.JobID, "reaps", rec.Reaps)
		return h.terminal(ctx, rec)
	}
	if !requeue {
		return nil
	}
	task, err := NewResolveTask(ref.JobID, ref.KeyID, rec.URL, h.Tasks)
	if err != nil {
		return err
	}
	opts := []asynq.Option{asynq.TaskID(next)}
	if rec.Resume != nil && time.Until(rec.Resume.ReadyAt) > 0 {
		opts = append(opts, asynq.ProcessAt(rec.Resume.ReadyAt))
	}
	h.requeueOnce.Do(func() { h.requeue = asynq.NewClientFromRedisClient(h.Store.rdb) })
	if _, err := h.requeue.EnqueueContext(ctx, task, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("jobs: queueing %s again: %w", ref.JobID, err)
	}
	return nil
}
