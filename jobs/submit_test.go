package jobs_test

import (
	"context"
	"errors"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
)

// submitCase is one Submit of submitSequence and what became of it.
type submitCase struct {
	Outcome  string
	Balance  *int64
	Position int64
}

// submitSequence runs the same submits with submit (new jobs with and without an idempotency
// key and credits, a replay, a refusal for credits, an id that exists, a broken queue; cost is
// 0 for the key without a balance, as the API gives it) and returns their outcomes and every
// key the queue's Redis then holds.
func submitSequence(t *testing.T, rdb *redis.Client, submit func(r *jobs.Record, cost int64) (jobs.Submitted, error)) ([]submitCase, map[string]string) {
	t.Helper()
	ctx := context.Background()
	if err := rdb.HSet(ctx, keys.RecordKey("key_c"), keys.FieldCredits, 3).Err(); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rec := func(id, keyID, idem string) *jobs.Record {
		return &jobs.Record{ID: id, KeyID: keyID, URL: "https://sho.rt/" + id, IdempotencyKey: idem,
			WebhookURL: "https://hooks.example/" + idem, Provider: "short", Tier: "standard", CreatedAt: at}
	}
	steps := []struct {
		rec  *jobs.Record
		cost int64
	}{
		{rec("a", "key_c", "i1"), 1},      // created, balance 2
		{rec("b", "key_c", "i1"), 1},      // replay of a
		{rec("c", "key_c", ""), 1},        // created, balance 1, one task ahead
		{rec("d", "key_c", "i2"), 2},      // out of credits
		{rec("e", "key_u", "i1"), 0},      // a key without a balance; the same idempotency key is another key's
		{rec("a", "key_c", ""), 1},        // the id exists
		{rec("broken", "key_c", "i3"), 1}, // the queue's list is broken below: nothing may stay
	}
	var got []submitCase
	for i, s := range steps {
		if s.rec.ID == "broken" {
			if err := rdb.Rename(ctx, "asynq:{resolve}:pending", "saved").Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.Set(ctx, "asynq:{resolve}:pending", "not a list", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		sub, err := submit(s.rec, s.cost)
		c := submitCase{Balance: sub.Balance, Position: sub.Position}
		switch {
		case errors.Is(err, jobs.ErrExists):
			c.Outcome = "exists"
		case err != nil && s.rec.ID == "broken":
			c.Outcome = "failed"
		case err != nil:
			t.Fatalf("step %d: %v", i, err)
		case sub.Replay != nil:
			c.Outcome = "replay of " + sub.Replay.JobID
		case sub.OutOfCredits:
			c.Outcome = "out of credits"
		default:
			c.Outcome = "created"
		}
		got = append(got, c)
	}
	if err := rdb.Rename(ctx, "saved", "asynq:{resolve}:pending").Err(); err != nil {
		t.Fatal(err)
	}
	state := map[string]string{}
	for _, k := range rdb.Keys(ctx, "*").Val() {
		var v string
		switch rdb.Type(ctx, k).Val() {
		case "string":
			v = rdb.Get(ctx, k).Val()
		case "hash":
			h := rdb.HGetAll(ctx, k).Val()
			delete(h, "pending_since") // the time of the enqueue
			var fs []string
			for f, x := range h {
				fs = append(fs, f+"="+x)
			}
			sort.Strings(fs)
			v = strings.Join(fs, " ")
		case "list":
			v = strings.Join(rdb.LRange(ctx, k, 0, -1).Val(), " ")
		case "set":
			m := rdb.SMembers(ctx, k).Val()
			sort.Strings(m)
			v = strings.Join(m, " ")
		}
		if rdb.PTTL(ctx, k).Val() > 0 {
			v += " (expires)"
		}
		state[k] = v
	}
	return got, state
}

func submitWith(q *jobs.Queue) func(r *jobs.Record, cost int64) (jobs.Submitted, error) {
	return func(r *jobs.Record, cost int64) (jobs.Submitted, error) {
		return q.Submit(context.Background(), r, cost)
	}
}

// TestSubmitOneMatchesSplit: a submit in one script (a single Redis, Sentinel) and a submit in
// two steps (Redis Cluster) give the same answers and leave the same records, claims, credits
// and asynq tasks, down to the bytes; a submit whose enqueue fails leaves nothing either way.
func TestSubmitOneMatchesSplit(t *testing.T) {
	t.Parallel()
	opts := jobs.TaskOptions{MaxAttempts: 3, Timeout: 5 * time.Second}
	oneRdb, splitRdb := redistest.New(t), redistest.New(t)
	one := jobs.NewQueue(oneRdb, jobs.NewStore(oneRdb, time.Hour), opts)
	split := jobs.NewQueue(splitRdb, jobs.NewStore(splitRdb, time.Hour), opts)
	jobs.SplitSubmits(split)
	gotOne, stateOne := submitSequence(t, oneRdb, submitWith(one))
	gotSplit, stateSplit := submitSequence(t, splitRdb, submitWith(split))
	if d := cmp.Diff(gotSplit, gotOne); d != "" {
		t.Errorf("answers differ (-split +one):\n%s", d)
	}
	if d := cmp.Diff(stateSplit, stateOne); d != "" {
		t.Errorf("Redis differs (-split +one):\n%s", d)
	}
	want := []string{"created", "replay of a", "created", "out of credits", "created", "exists", "failed"}
	for i, c := range gotOne {
		if c.Outcome != want[i] {
			t.Errorf("step %d: %s, want %s", i, c.Outcome, want[i])
		}
	}
	if gotOne[2].Position != 1 || *gotOne[2].Balance != 1 || gotOne[4].Balance != nil {
		t.Errorf("answers %+v", gotOne)
	}
	if stateOne["linkhop:{k:key_c}:key"] != "credits=1" {
		t.Errorf("credits %q, want 1 left (the failed submit's credit back)", stateOne["linkhop:{k:key_c}:key"])
	}
	for k := range stateOne {
		if strings.Contains(k, "broken") {
			t.Errorf("a failed submit left %s", k)
		}
	}
	// The one-script submit's task is the task asynq's own client writes for the job.
	info, err := asynq.NewInspectorFromRedisClient(oneRdb).GetTaskInfo(jobs.QueueResolve, "c")
	if err != nil || info.State != asynq.TaskStatePending || info.MaxRetry != 13 {
		t.Fatalf("task %+v %v", info, err)
	}
	refRdb := redistest.New(t)
	ref := jobs.NewQueue(refRdb, jobs.NewStore(refRdb, time.Hour), opts)
	if err := ref.Ensure(context.Background(), jobs.Record{ID: "c", KeyID: "key_c", URL: "https://sho.rt/c"}); err != nil {
		t.Fatal(err)
	}
	wantTask, err := asynq.NewInspectorFromRedisClient(refRdb).GetTaskInfo(jobs.QueueResolve, "c")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantTask, info, cmpopts.IgnoreFields(asynq.TaskInfo{}, "NextProcessAt")); d != "" {
		t.Errorf("task differs from asynq.Client's (-asynq +submit):\n%s", d)
	}
}

// TestSubmitOnClusterNode: a plain client on a node of a Redis Cluster (one node holding every
// slot) cannot run the one-script submit, whose keys span slots; the queue notices and
// submits in two steps from then on.
func TestSubmitOnClusterNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node := redistest.StartClusterNode(t).Client(t)
	hook := &tripHook{}
	node.AddHook(hook)
	store := jobs.NewStore(node, time.Hour)
	q := jobs.NewQueue(node, store, jobs.TaskOptions{})
	for i, id := range []string{"j1", "j2"} {
		hook.take()
		if _, err := q.Submit(ctx, &jobs.Record{ID: id, KeyID: "key_n", URL: "https://sho.rt/" + id}, 0); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		n, names := hook.take()
		t.Logf("submit %d: %d round trips %v", i, n, names)
		if i == 1 && n != 2 {
			t.Errorf("a split submit: %d round trips %v, want 2", n, names)
		}
		if _, err := store.Get(ctx, "key_n", id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSubmitRoundTrips: a new job is one round trip on a single Redis, two on Redis Cluster
// (three primaries: the key's slot and asynq's are apart), where the record is written before
// the task.
func TestSubmitRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	count := func(t *testing.T, rdb redis.UniversalClient, want int) {
		hook := &tripHook{}
		rdb.AddHook(hook)
		store := jobs.NewStore(rdb, time.Hour)
		q := jobs.NewQueue(rdb, store, jobs.TaskOptions{})
		for i, id := range []string{"warm", "r1", "r2"} {
			hook.take()
			if _, err := q.Submit(ctx, &jobs.Record{ID: id, KeyID: "key_r", URL: "https://sho.rt/" + id, IdempotencyKey: id}, 0); err != nil {
				t.Fatal(err)
			}
			n, names := hook.take()
			if i > 0 && n != want { // the first submit also loads the scripts
				t.Errorf("submit: %d round trips %v, want %d", n, names, want)
			}
			if _, err := store.Get(ctx, "key_r", id); err != nil {
				t.Fatal(err)
			}
			if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(jobs.QueueResolve, id); err != nil {
				t.Fatalf("task %s: %v", id, err)
			}
		}
	}
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		count(t, redistest.New(t), 1)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		prim, _ := redistest.Cluster(t, 3, 0, redis.Options{})
		cc := redistest.ClusterClient(t, prim)
		a, err := cc.MasterForKey(ctx, jobs.RecordKey("key_r", "x"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := cc.MasterForKey(ctx, "asynq:{resolve}:pending")
		if err != nil {
			t.Fatal(err)
		}
		if a.Options().Addr == b.Options().Addr {
			t.Fatal("the key's slot and asynq's are on one primary; the test wants them apart")
		}
		count(t, cc, 2)
	})
}

// loseReply makes the next pipeline's replies look lost (as a connection that broke after
// Redis ran the commands): every command of it fails with io.ErrUnexpectedEOF. With unsent,
// the pipeline is not sent at all (a connection that broke before).
// lossyQueue is a Queue on a Redis whose client can lose the reply of the next call (hook).
func lossyQueue(t *testing.T) (*redis.Client, *loseReply, *jobs.Store, *jobs.Queue) {
	t.Helper()
	rdb := redistest.New(t)
	hook := &loseReply{}
	rdb.AddHook(hook)
	store := jobs.NewStore(rdb, time.Hour)
	return rdb, hook, store, jobs.NewQueue(rdb, store, jobs.TaskOptions{})
}

type loseReply struct {
	armed  atomic.Bool
	unsent bool
}

func (h *loseReply) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *loseReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *loseReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var err error
		if !h.unsent || !h.armed.Load() {
			err = next(ctx, cmds)
		}
		if h.armed.CompareAndSwap(true, false) {
			for _, c := range cmds {
				c.SetErr(io.ErrUnexpectedEOF)
			}
			return io.ErrUnexpectedEOF
		}
		return err
	}
}

// TestSubmitLostReply: when the one-script submit ran but its reply was lost, Submit fails
// and takes back what the script wrote (record, claim, credits, task); when the submit never
// reached Redis, the undo takes back nothing (no credits appear from nowhere).
func TestSubmitLostReply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, hook, store, q := lossyQueue(t)
	if err := rdb.HSet(ctx, keys.RecordKey("key_l"), keys.FieldCredits, 5).Err(); err != nil {
		t.Fatal(err)
	}
	checkLostReply(t, rdb, hook, store, func(r *jobs.Record) error {
		_, err := q.Submit(ctx, r, 1)
		return err
	})
}

// checkLostReply submits through submit, for key key_l with a balance of 5 and jobs costing 1:
// a warm-up job; one whose reply is lost, which must be taken back whole (record, claim,
// credits, task); one that never reaches Redis, whose undo must give nothing back.
func checkLostReply(t *testing.T, rdb *redis.Client, hook *loseReply, store *jobs.Store, submit func(*jobs.Record) error) {
	t.Helper()
	ctx := context.Background()
	if err := submit(&jobs.Record{ID: "warm", KeyID: "key_l", URL: "https://sho.rt/w"}); err != nil {
		t.Fatal(err)
	}
	hook.armed.Store(true)
	if err := submit(&jobs.Record{ID: "lost", KeyID: "key_l", URL: "https://sho.rt/l", IdempotencyKey: "i"}); err == nil {
		t.Fatal("a submit whose reply was lost succeeded")
	}
	if _, err := store.Get(ctx, "key_l", "lost"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("record left behind: %v", err)
	}
	if c, err := store.GetClaim(ctx, "key_l", "i"); c != nil || err != nil {
		t.Errorf("claim left behind: %+v %v", c, err)
	}
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(jobs.QueueResolve, "lost"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("task left behind: %v", err)
	}
	if n := rdb.HGet(ctx, keys.RecordKey("key_l"), keys.FieldCredits).Val(); n != "4" {
		t.Errorf("credits %s, want 4 (the warm-up's taken, the lost submit's given back)", n)
	}
	hook.unsent = true
	hook.armed.Store(true)
	if err := submit(&jobs.Record{ID: "unsent", KeyID: "key_l", URL: "https://sho.rt/u"}); err == nil {
		t.Fatal("a submit that was never sent succeeded")
	}
	if n := rdb.HGet(ctx, keys.RecordKey("key_l"), keys.FieldCredits).Val(); n != "4" {
		t.Errorf("credits %s after a submit that never reached Redis, want 4 (its undo gives nothing back)", n)
	}
}
