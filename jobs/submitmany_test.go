package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/quota"
)

// batchOutcome is what a test compares of a SubmitBatch: the items' outcomes, the day's count,
// and what is left in Redis.
type batchOutcome struct {
	Codes     []jobs.BatchCode
	Balances  []string
	Positions []int64
	Replays   []string // the replayed claim's job (by item name) and its status
	DayUsed   int64
	Counted   int64
	Credits   string
	Pending   int64
	Records   []string // the items' jobs that exist (by item name)
	Tasks     []string // the items' jobs with a task
}

// runBatches submits batches of named items in turn on rdb, for key keyID with credits and
// daily quota, and reports each batch's outcome. A name stands for one job id throughout;
// between the batches, drop names the jobs whose tasks are deleted (as a failure between a
// job's create and its enqueue would leave them).
func runBatches(t *testing.T, rdb redis.UniversalClient, batches [][]jobs.BatchItem, drop []string) []batchOutcome {
	t.Helper()
	ctx := context.Background()
	const keyID = "key_same"
	if err := rdb.HSet(ctx, keys.RecordKey(keyID), keys.FieldCredits, 6, keys.FieldDailyQuota, 8).Err(); err != nil {
		t.Fatal(err)
	}
	q := jobs.NewQueue(rdb, jobs.NewStore(rdb, time.Hour), jobs.TaskOptions{MaxAttempts: 2, Timeout: time.Second})
	ids := map[string]string{} // name → job id
	names := map[string]string{}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var out []batchOutcome
	for b, batch := range batches {
		items := make([]jobs.BatchItem, len(batch))
		for i, it := range batch {
			r := *it.Record
			if ids[r.ID] == "" {
				ids[r.ID] = uuid.NewString()
				names[ids[r.ID]] = r.ID
			}
			name := r.ID
			r.ID = ids[name]
			items[i] = jobs.BatchItem{Kind: it.Kind, Record: &r, Cost: it.Cost}
		}
		res, err := q.SubmitBatch(ctx, keyID, items)
		if err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		o := batchOutcome{DayUsed: res.DayUsed, Counted: res.Counted}
		first := int64(-1)
		for i, it := range res.Items {
			o.Codes = append(o.Codes, it.Code)
			bal := "none"
			if it.Balance != nil {
				bal = fmt.Sprint(*it.Balance)
			}
			o.Balances = append(o.Balances, bal)
			if it.Code == jobs.BatchCreated && items[i].Kind == jobs.BatchNew {
				if first < 0 {
					first = it.Position
				}
				o.Positions = append(o.Positions, it.Position-first)
			}
			if it.Replay != nil {
				st := "gone"
				if it.Replayed != nil {
					st = string(it.Replayed.Status)
				}
				o.Replays = append(o.Replays, names[it.Replay.JobID]+" "+st)
			}
		}
		o.Credits = rdb.HGet(ctx, keys.RecordKey(keyID), keys.FieldCredits).Val()
		o.Pending = rdb.LLen(ctx, "asynq:{resolve}:pending").Val()
		for name, id := range ids {
			if rdb.Exists(ctx, jobs.RecordKey(keyID, id)).Val() == 1 {
				o.Records = append(o.Records, name)
			}
			if _, err := insp.GetTaskInfo(jobs.QueueResolve, id); err == nil {
				o.Tasks = append(o.Tasks, name)
			}
		}
		slices.Sort(o.Records)
		slices.Sort(o.Tasks)
		out = append(out, o)
		if b == 0 {
			for _, name := range drop {
				if err := insp.DeleteTask(jobs.QueueResolve, ids[name]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return out
}

// TestSubmitBatchSameEverywhere: the one-script batch of a single Redis and the two-script batch
// of Redis Cluster take the same items alike: replays within a batch and of earlier batches
// (with the task of a queued job enqueued again when it is gone), credits that run out,
// a daily quota that is used up, cached and removed links.
func TestSubmitBatchSameEverywhere(t *testing.T) {
	t.Parallel()
	n := func(name, idem string, cost int64) jobs.BatchItem {
		return jobs.BatchItem{Kind: jobs.BatchNew, Cost: cost, Record: &jobs.Record{ID: name, URL: "https://sho.rt/" + name, IdempotencyKey: idem, Provider: "short", Tier: "standard"}}
	}
	other := func(kind jobs.BatchKind, idem string) jobs.BatchItem {
		return jobs.BatchItem{Kind: kind, Record: &jobs.Record{URL: "https://sho.rt/" + string(kind), IdempotencyKey: idem}}
	}
	batches := [][]jobs.BatchItem{
		{n("a", "ka", 1), n("b", "", 2), n("a2", "ka", 1), other(jobs.BatchCached, ""), n("c", "kc", 1), other(jobs.BatchRemoved, "")},
		{n("a3", "ka", 1), n("c2", "kc", 1), n("d", "", 2), n("e", "", 1), n("f", "", 1), other(jobs.BatchCached, "kx"),
			n("g", "kg", 0), other(jobs.BatchCached, ""), other(jobs.BatchRemoved, ""), n("h", "", 0), other(jobs.BatchRemoved, "ka")},
	}
	// c's task is gone before the second batch replays it: it is enqueued again.
	single := runBatches(t, redistest.New(t), batches, []string{"c"})
	prim, _ := redistest.Cluster(t, 3, 0, redis.Options{})
	cluster := runBatches(t, redistest.ClusterClient(t, prim), batches, []string{"c"})
	if d := cmp.Diff(single, cluster); d != "" {
		t.Errorf("single Redis and Cluster differ (-single +cluster):\n%s", d)
	}
	// What both did, spelled out for the first batch's in-batch replay and the second's limits.
	want := []jobs.BatchCode{jobs.BatchReplay, jobs.BatchReplay, jobs.BatchCreated, jobs.BatchOutOfCredits, jobs.BatchOutOfCredits,
		jobs.BatchCreated, jobs.BatchCreated, jobs.BatchCreated, jobs.BatchQuotaExceeded, jobs.BatchQuotaExceeded, jobs.BatchReplay}
	if d := cmp.Diff(want, single[1].Codes); d != "" {
		t.Errorf("second batch's codes (-want +got):\n%s\n%+v", d, single)
	}
	if single[0].Codes[2] != jobs.BatchReplay || single[0].Replays[0] != "a queued" {
		t.Errorf("first batch: %+v", single[0])
	}
	if !slices.Contains(single[1].Tasks, "c") {
		t.Errorf("the replayed job's task was not enqueued again: %+v", single[1])
	}
}

// TestSubmitBatchRoundTrips: a batch of new links is one round trip on a single Redis and two on
// Redis Cluster, whatever its size; replaying a queued job whose task is gone adds one.
func TestSubmitBatchRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	count := func(t *testing.T, rdb redis.UniversalClient, want int) {
		hook := &tripHook{}
		rdb.AddHook(hook)
		q := jobs.NewQueue(rdb, jobs.NewStore(rdb, time.Hour), jobs.TaskOptions{})
		for round, size := range []int{2, 1, 100} {
			items := make([]jobs.BatchItem, size)
			for i := range items {
				items[i] = jobs.BatchItem{Kind: jobs.BatchNew, Record: &jobs.Record{ID: uuid.NewString(), URL: "https://sho.rt/r", IdempotencyKey: fmt.Sprint(round, "-", i)}}
			}
			hook.take()
			if _, err := q.SubmitBatch(ctx, "key_t", items); err != nil {
				t.Fatal(err)
			}
			if n, names := hook.take(); round > 0 && n != want { // the first batch also loads the scripts
				t.Errorf("%d items: %d round trips %v, want %d", size, n, names, want)
			}
		}
	}
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		rdb := redistest.New(t)
		count(t, rdb, 1)
		// A replay of a queued job whose task is gone: its task is enqueued in a second trip
		// (the first replay also loads the enqueue script).
		q := jobs.NewQueue(rdb, jobs.NewStore(rdb, time.Hour), jobs.TaskOptions{})
		insp := asynq.NewInspectorFromRedisClient(rdb)
		for round := range 2 {
			id, idem := uuid.NewString(), fmt.Sprint("z", round)
			item := func() []jobs.BatchItem {
				return []jobs.BatchItem{{Kind: jobs.BatchNew, Record: &jobs.Record{ID: id, URL: "https://sho.rt/z", IdempotencyKey: idem}}}
			}
			if _, err := q.SubmitBatch(ctx, "key_t", item()); err != nil {
				t.Fatal(err)
			}
			if err := insp.DeleteTask(jobs.QueueResolve, id); err != nil {
				t.Fatal(err)
			}
			hook := &tripHook{}
			rdb.AddHook(hook)
			res, err := q.SubmitBatch(ctx, "key_t", item())
			if err != nil || res.Items[0].Code != jobs.BatchReplay {
				t.Fatalf("%+v %v", res, err)
			}
			if n, names := hook.take(); round == 1 && n != 2 {
				t.Errorf("a replay of a job without its task: %d round trips %v, want 2", n, names)
			}
			if _, err := insp.GetTaskInfo(jobs.QueueResolve, id); err != nil {
				t.Errorf("task: %v", err)
			}
		}
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		prim, _ := redistest.Cluster(t, 3, 0, redis.Options{})
		count(t, redistest.ClusterClient(t, prim), 2)
	})
}

// TestSubmitBatchExistingID: a batch naming a job id that exists, or one id twice, fails with
// ErrExists and leaves nothing behind: no record, claim, task, credit or unit of the day taken.
func TestSubmitBatchExistingID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	q := jobs.NewQueue(rdb, jobs.NewStore(rdb, time.Hour), jobs.TaskOptions{})
	const keyID = "key_x"
	if err := rdb.HSet(ctx, keys.RecordKey(keyID), keys.FieldCredits, 10, keys.FieldDailyQuota, 10).Err(); err != nil {
		t.Fatal(err)
	}
	taken := uuid.NewString()
	if err := rdb.Set(ctx, jobs.RecordKey(keyID, taken), "{}", 0).Err(); err != nil {
		t.Fatal(err)
	}
	fresh, twice := uuid.NewString(), uuid.NewString()
	for _, tc := range []struct {
		name string
		ids  []string
	}{
		{"exists", []string{fresh, taken}},
		{"twice", []string{twice, fresh, twice}},
	} {
		var items []jobs.BatchItem
		for i, id := range tc.ids {
			items = append(items, jobs.BatchItem{Kind: jobs.BatchNew, Cost: 1, Record: &jobs.Record{ID: id, URL: "https://sho.rt/x", IdempotencyKey: fmt.Sprint(tc.name, i)}})
		}
		res, err := q.SubmitBatch(ctx, keyID, items)
		if !errors.Is(err, jobs.ErrExists) {
			t.Fatalf("%s: %v, want ErrExists", tc.name, err)
		}
		if res.Counted != 0 {
			t.Errorf("%s: %d units of the day to give back, want 0: none was taken", tc.name, res.Counted)
		}
		ks, _ := rdb.Keys(ctx, "*").Result()
		ks = slices.DeleteFunc(ks, func(k string) bool { return k == "asynq:queues" }) // asynq's set of queue names
		want := []string{keys.RecordKey(keyID), jobs.RecordKey(keyID, taken)}
		if d := cmp.Diff(want, ks, cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
			t.Errorf("%s: keys (-want +got):\n%s", tc.name, d)
		}
		if c := rdb.HGet(ctx, keys.RecordKey(keyID), keys.FieldCredits).Val(); c != "10" {
			t.Errorf("%s: credits %s, want 10", tc.name, c)
		}
		if n := rdb.Exists(ctx, quota.DayKey(keyID)).Val(); n != 0 {
			t.Errorf("%s: the day counter was written", tc.name)
		}
	}
}

// TestSubmitBatchLostReply: when the one-script batch ran but its reply was lost, SubmitBatch
// fails and takes back what the script wrote: records, claims, credits and tasks.
func TestSubmitBatchLostReply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, hook, store, q := lossyQueue(t)
	const keyID = "key_lb"
	if err := rdb.HSet(ctx, keys.RecordKey(keyID), keys.FieldCredits, 5).Err(); err != nil {
		t.Fatal(err)
	}
	batch := func(idem ...string) []jobs.BatchItem {
		var items []jobs.BatchItem
		for _, k := range idem {
			items = append(items, jobs.BatchItem{Kind: jobs.BatchNew, Cost: 1, Record: &jobs.Record{ID: uuid.NewString(), URL: "https://sho.rt/" + k, IdempotencyKey: k}})
		}
		return items
	}
	if _, err := q.SubmitBatch(ctx, keyID, batch("warm")); err != nil {
		t.Fatal(err)
	}
	hook.armed.Store(true)
	lost := batch("l1", "l2")
	if _, err := q.SubmitBatch(ctx, keyID, lost); err == nil {
		t.Fatal("a batch whose reply was lost succeeded")
	}
	for _, it := range lost {
		if _, err := store.Get(ctx, keyID, it.Record.ID); !errors.Is(err, jobs.ErrNotFound) {
			t.Errorf("record left behind: %v", err)
		}
		if c, err := store.GetClaim(ctx, keyID, it.Record.IdempotencyKey); c != nil || err != nil {
			t.Errorf("claim left behind: %+v %v", c, err)
		}
		if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(jobs.QueueResolve, it.Record.ID); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("task left behind: %v", err)
		}
	}
	if n := rdb.HGet(ctx, keys.RecordKey(keyID), keys.FieldCredits).Val(); n != "4" {
		t.Errorf("credits %s, want 4 (the warm-up's taken, the lost batch's given back)", n)
	}
}
