package jobs

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/keys"
)

// A task completed by its job's last write (docs/operations.md#a-job-in-three-round-trips).
//
// asynq completes a task whose handler returned no error with a script of its own (its Done):
// the task leaves its queue's active list and lease set, its hash is deleted, and the queue's
// processed counters count it. That is one more round trip after the handler's last. On a
// single Redis or through Sentinel, where the job's record and asynq's keys are on one server,
// the handler's last write (the record's compare-and-set, casDoneScript) does the same in the
// same step, and TaskCompletions, a hook on the worker's Redis client, then answers asynq's
// Done of that task without sending it.
//
// A handler asks for it only when nothing can make the run fail after that write (a run that
// fails must leave its task to asynq, which retries it): a resolve job without a webhook to
// queue (OnTerminal would queue it, and may fail), a webhook attempt that was delivered, a
// webhook run whose held-back attempt goes on to wait in the Room (the write that parks its
// job lease, Leases.parkIn, does it), and no replicas awaited after the run
// (REDIS_MIN_REPLICAS_ACK, Replicated: a run the replicas did not acknowledge fails). On Redis
// Cluster the record and the task are in different slots, and tasks are completed the asynq
// way.

// casDoneScript is casScript that, once the record is written, completes the asynq task as
// asynq's Done does (doneLua: KEYS[3] to KEYS[7], ARGV[4] to ARGV[6]). A task no longer on the
// active list (asynq's recovery requeued it after its lease lapsed) is left as it is. Reply:
// casScript's, with 2 for written and completed.
var casDoneScript = redis.NewScript(casDoneSrc)

var casDoneSrc = keys.Script(casLua + doneLua(3, 4))

// doneLua completes an asynq task as asynq's Done does, for a script whose KEYS[k] to
// KEYS[k+4] are the queue's active list, its lease set, the task's hash, the queue's processed
// counter of the day and its processed total, and whose ARGV[a] to ARGV[a+2] are the task id,
// when the day's counter expires (unix seconds) and the largest total (math.MaxInt64; the
// total starts again at 1 there, as asynq's does). It returns 2, or 1 without touching
// anything when the task is no longer on the active list. The indices are written into the
// script's text, so that it costs what a script written by hand would.
func doneLua(k, a int) string {
	return strings.NewReplacer(
		"$ACTIVE", "KEYS["+strconv.Itoa(k)+"]", "$LEASE", "KEYS["+strconv.Itoa(k+1)+"]", "$TASK", "KEYS["+strconv.Itoa(k+2)+"]",
		"$DAILY", "KEYS["+strconv.Itoa(k+3)+"]", "$TOTAL", "KEYS["+strconv.Itoa(k+4)+"]",
		"$ID", "ARGV["+strconv.Itoa(a)+"]", "$EXPIRE", "ARGV["+strconv.Itoa(a+1)+"]", "$MAX", "ARGV["+strconv.Itoa(a+2)+"]",
	).Replace(`
if redis.call('LREM', $ACTIVE, 0, $ID) == 0 then return 1 end
redis.call('ZREM', $LEASE, $ID)
redis.call('DEL', $TASK)
if redis.call('INCR', $DAILY) == 1 then redis.call('EXPIREAT', $DAILY, $EXPIRE) end
if redis.call('GET', $TOTAL) == $MAX then redis.call('SET', $TOTAL, '1') else redis.call('INCR', $TOTAL) end
return 2`)
}

// maxInt64 is ARGV[6] of casDoneScript.
const maxInt64 = int64(math.MaxInt64)

// asynqStatsTTL is how long asynq keeps a queue's daily counters (its statsTTL).
const asynqStatsTTL = 90 * 24 * time.Hour

// TaskCompletions are the tasks of one worker process that its handlers completed in their
// last write; as a hook on the worker's Redis client it answers asynq's Done of each of them
// without sending it. Worker.Completions gives a worker's, for ResolveHandler.Complete.
type TaskCompletions struct {
	off atomic.Bool // Redis Cluster: the record and the task are in different slots
	mu  sync.Mutex
	ids map[string]time.Time // task keys completed here, awaiting asynq's Done; when added
}

// completionsKept bounds the tasks awaiting asynq's Done before the stale ones are dropped: a
// run whose asynq lease lapsed meanwhile gets no Done (asynq's recovery requeues it instead).
const completionsKept = 1024

func newTaskCompletions(rdb redis.UniversalClient) *TaskCompletions {
	c := &TaskCompletions{ids: map[string]time.Time{}}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		c.off.Store(true)
	}
	return c
}

// taskDone is the completion of one asynq task by a record write (casDoneScript's keys and
// arguments).
type taskDone struct {
	c                                     *TaskCompletions
	id, active, lease, task, daily, total string
	statsExpire                           int64
}

// task returns the completion of the asynq task that ctx runs, nil when c is nil or off or
// ctx is not an asynq run.
func (c *TaskCompletions) task(ctx context.Context) *taskDone {
	if c == nil || c.off.Load() {
		return nil
	}
	id, ok := asynq.GetTaskID(ctx)
	q, qok := asynq.GetQueueName(ctx)
	if !ok || !qok {
		return nil
	}
	return c.taskOf(q, id)
}

// taskOf returns the completion of task id of queue q.
func (c *TaskCompletions) taskOf(q, id string) *taskDone {
	now := time.Now()
	prefix := "asynq:{" + q + "}:"
	return &taskDone{c: c, id: id, active: prefix + "active", lease: prefix + "lease", task: prefix + "t:" + id,
		daily: prefix + "processed:" + now.UTC().Format("2006-01-02"), total: prefix + "processed",
		statsExpire: now.Add(asynqStatsTTL).Unix()}
}

// use returns td, or nil when its process completes tasks the asynq way (Cluster).
func (td *taskDone) use() *taskDone {
	if td == nil || td.c.off.Load() {
		return nil
	}
	return td
}

// completed notes that td's task was completed, so that asynq's Done of it is answered here.
func (td *taskDone) completed() {
	c := td.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ids) >= completionsKept {
		for k, at := range c.ids {
			if time.Since(at) > time.Minute {
				delete(c.ids, k)
			}
		}
	}
	c.ids[td.task] = time.Now()
}

func (c *TaskCompletions) take(task string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[task]
	delete(c.ids, task)
	return ok
}

// asynqDone tells asynq's Done of a task by its keys (the queue's active list, lease set,
// the task's hash, the processed counters) and returns the task's key; an asynq upgrade that
// changes them makes TestWorkerCompletesInLastWrite fail.
func asynqDone(cmd redis.Cmder) (string, bool) {
	args := cmd.Args()
	if len(args) != 11 {
		return "", false
	}
	if name, _ := args[0].(string); name != "evalsha" && name != "eval" {
		return "", false
	}
	active, _ := args[3].(string)
	lease, _ := args[4].(string)
	task, _ := args[5].(string)
	daily, _ := args[6].(string)
	total, _ := args[7].(string)
	id, _ := args[8].(string)
	prefix, ok := strings.CutSuffix(active, "active")
	if !ok || !strings.HasPrefix(prefix, "asynq:{") || lease != prefix+"lease" || task != prefix+"t:"+id ||
		!strings.HasPrefix(daily, prefix+"processed:") || total != prefix+"processed" {
		return "", false
	}
	return task, true
}

// completedHere is the value of asynq's Done of a task completed by its job's last write,
// answered without Redis; asynq reads only its error, nil.
var completedHere = &struct{ what string }{"a task completion answered by the worker: its job's last write did it"}

// DialHook implements redis.Hook.
func (c *TaskCompletions) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook implements redis.Hook; asynq's Done is a single command.
func (c *TaskCompletions) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook implements redis.Hook.
func (c *TaskCompletions) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if rc, isCmd := cmd.(*redis.Cmd); isCmd {
			if task, ok := asynqDone(cmd); ok && c.take(task) {
				rc.SetVal(completedHere)
				return nil
			}
		}
		return next(ctx, cmd)
	}
}
