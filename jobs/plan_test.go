package jobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/quota"
)

// noCache is a cache entry that no test writes: the link is not cached.
const noCache = "linkhop:resolve:{none}:rec"

// apiKey writes the request fields of key id's record as package keys does, with token digest
// "d" and no per-minute limit unless given.
func apiKey(t *testing.T, rdb *redis.Client, id string, fields ...any) {
	t.Helper()
	f := append([]any{keys.FieldHash, "d", keys.FieldScopes, keys.ScopeResolve, keys.FieldRateLimit, "0"}, fields...)
	if err := rdb.HSet(context.Background(), keys.RecordKey(id), f...).Err(); err != nil {
		t.Fatal(err)
	}
}

// admitWith runs p in the admission of key keyID as the API does: one pipeline with the
// Plan's own commands, the scripts loaded on their first use.
func admitWith(t *testing.T, rdb redis.UniversalClient, l *quota.Limiter, p *jobs.Plan, keyID string) (quota.Admission, error) {
	t.Helper()
	ctx := context.Background()
	for range 2 {
		var decode func() (quota.Admission, error)
		_, _ = rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			p.Pipe(ctx, pipe)
			decode = l.AdmitIn(ctx, pipe, quota.AdmitRequest{KeyID: keyID, RecordKey: keys.RecordKey(keyID), Digest: "d",
				Fields: keys.RequestFields, Then: p.Call()})
			return nil
		})
		a, err := decode()
		if !errors.Is(err, quota.ErrNoScript) {
			return a, err
		}
		if err := l.LoadScripts(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("the scripts were not loaded")
	return quota.Admission{}, nil
}

// planOutcome runs the Plan of r (the link not cached, costing cost credits to a key with a
// balance) in the admission of its key and reads its outcome, as the API does.
func planOutcome(t *testing.T, rdb redis.UniversalClient, q *jobs.Queue, l *quota.Limiter, r *jobs.Record, cost int64, cacheKey string) (jobs.PlanOutcome, error) {
	t.Helper()
	ctx := context.Background()
	p := q.Plan(ctx, r, cost, keys.ScopeResolve, cacheKey)
	if p == nil {
		t.Fatal("no Plan on a single Redis")
	}
	a, err := admitWith(t, rdb, l, p, r.KeyID)
	if err != nil {
		_, err = p.Failed(ctx, err)
		return jobs.PlanOutcome{}, err
	}
	if !a.Authenticated || !a.Decision.Allowed {
		t.Fatalf("admission %+v", a)
	}
	return p.Outcome(ctx, a.Then, a.ThenErr)
}

// TestPlanMatchesSubmit: a submit in the admission's script (Plan) gives the answers of Submit
// and leaves the same records, claims, credits and asynq tasks, down to the bytes, though it
// learns whether the key has a balance only in Redis (the key without one is asked the link's
// cost too, and neither pays it nor has its record hold it).
func TestPlanMatchesSubmit(t *testing.T) {
	t.Parallel()
	opts := jobs.TaskOptions{MaxAttempts: 3, Timeout: 5 * time.Second}
	subRdb, planRdb := redistest.New(t), redistest.New(t)
	for _, rdb := range []*redis.Client{subRdb, planRdb} {
		apiKey(t, rdb, "key_c")
		apiKey(t, rdb, "key_u")
	}
	sub := jobs.NewQueue(subRdb, jobs.NewStore(subRdb, time.Hour), opts)
	plan := jobs.NewQueue(planRdb, jobs.NewStore(planRdb, time.Hour), opts)
	l := quota.New(planRdb)
	gotSub, stateSub := submitSequence(t, subRdb, submitWith(sub))
	gotPlan, statePlan := submitSequence(t, planRdb, func(r *jobs.Record, cost int64) (jobs.Submitted, error) {
		out, err := planOutcome(t, planRdb, plan, l, r, max(cost, 1), noCache)
		if out.NoScope || out.Cached != nil {
			t.Fatalf("outcome %+v", out)
		}
		return out.Submitted, err
	})
	if d := cmp.Diff(gotSub, gotPlan); d != "" {
		t.Errorf("answers differ (-Submit +Plan):\n%s", d)
	}
	if d := cmp.Diff(stateSub, statePlan); d != "" {
		t.Errorf("Redis differs (-Submit +Plan):\n%s", d)
	}
	if !strings.Contains(statePlan[jobs.RecordKey("key_c", "a")], `"credits_charged":0,"credits_held":1,`) ||
		strings.Contains(statePlan[jobs.RecordKey("key_u", "e")], "credits_held") {
		t.Errorf("records %s and %s", statePlan[jobs.RecordKey("key_c", "a")], statePlan[jobs.RecordKey("key_u", "e")])
	}
}

// TestPlanBranches: a key without the scope, and a link the cache holds, write nothing; a
// request the limiter refuses runs nothing.
func TestPlanBranches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	q := jobs.NewQueue(rdb, jobs.NewStore(rdb, time.Hour), jobs.TaskOptions{})
	l := quota.New(rdb)
	apiKey(t, rdb, "key_c", keys.FieldCredits, 5)
	apiKey(t, rdb, "key_n", keys.FieldScopes, "")
	apiKey(t, rdb, "key_o", keys.FieldScopes, "other,resolve")
	apiKey(t, rdb, "key_1", keys.FieldRateLimit, 1)
	// Warm up: asynq's set of queues, the scripts.
	if _, err := planOutcome(t, rdb, q, l, &jobs.Record{ID: "w", KeyID: "key_o", URL: "https://sho.rt/w"}, 1, noCache); err != nil {
		t.Fatal(err)
	}
	before := rdb.Keys(ctx, "*").Val()

	out, err := planOutcome(t, rdb, q, l, &jobs.Record{ID: "n", KeyID: "key_n", URL: "https://sho.rt/n", IdempotencyKey: "i"}, 1, noCache)
	if err != nil || !out.NoScope {
		t.Errorf("a key without the scope: %+v %v", out, err)
	}
	if err := rdb.Set(ctx, "linkhop:resolve:{c}:rec", "the entry", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before = append(before, "linkhop:resolve:{c}:rec")
	out, err = planOutcome(t, rdb, q, l, &jobs.Record{ID: "c", KeyID: "key_c", URL: "https://sho.rt/c", IdempotencyKey: "i"}, 1, "linkhop:resolve:{c}:rec")
	if err != nil || string(out.Cached) != "the entry" || out.NoScope {
		t.Errorf("a cached link: %+v %v", out, err)
	}
	if d := cmp.Diff(len(before), len(rdb.Keys(ctx, "*").Val())); d != "" {
		t.Errorf("keys written (-before +after): %v", rdb.Keys(ctx, "*").Val())
	}
	if n := rdb.HGet(ctx, keys.RecordKey("key_c"), keys.FieldCredits).Val(); n != "5" {
		t.Errorf("credits %s, want 5", n)
	}

	// The limiter refuses the second request of key_1 in the minute: nothing runs.
	if _, err := planOutcome(t, rdb, q, l, &jobs.Record{ID: "l1", KeyID: "key_1", URL: "https://sho.rt/l1"}, 1, noCache); err != nil {
		t.Fatal(err)
	}
	p := q.Plan(ctx, &jobs.Record{ID: "l2", KeyID: "key_1", URL: "https://sho.rt/l2"}, 1, keys.ScopeResolve, noCache)
	a, err := admitWith(t, rdb, l, p, "key_1")
	if err != nil || a.Decision.Allowed || a.Then != nil || a.ThenErr != nil {
		t.Fatalf("a refused request: %+v %v", a, err)
	}
	if n := rdb.Exists(ctx, jobs.RecordKey("key_1", "l2")).Val(); n != 0 {
		t.Error("a refused request created its job")
	}
}

// TestPlanLostReply: when the admission ran its submit but the reply was lost, Failed takes
// back what the script wrote (record, claim, credits, task); when it never reached Redis, the
// undo takes back nothing (no credits appear from nowhere).
func TestPlanLostReply(t *testing.T) {
	t.Parallel()
	rdb, hook, store, q := lossyQueue(t)
	l := quota.New(rdb)
	apiKey(t, rdb, "key_l", keys.FieldCredits, 5)
	checkLostReply(t, rdb, hook, store, func(r *jobs.Record) error {
		_, err := planOutcome(t, rdb, q, l, r, 1, noCache)
		return err
	})
}

// TestPlanReplicas: with REDIS_MIN_REPLICAS_ACK and no replica to acknowledge, a job created in
// the admission is taken back and its Outcome fails, as Submit's does.
func TestPlanReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	store := jobs.NewStore(rdb, time.Hour)
	q := jobs.NewQueue(rdb, store, jobs.TaskOptions{})
	q.RequireReplicas(replicas.Ack{Min: 1, Timeout: 200 * time.Millisecond})
	l := quota.New(rdb)
	apiKey(t, rdb, "key_r", keys.FieldCredits, 5)
	_, err := planOutcome(t, rdb, q, l, &jobs.Record{ID: "r", KeyID: "key_r", URL: "https://sho.rt/r", IdempotencyKey: "i"}, 2, noCache)
	if !errors.Is(err, replicas.ErrTooFew) {
		t.Fatalf("error %v, want ErrTooFew", err)
	}
	if _, err := store.Get(ctx, "key_r", "r"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("record left behind: %v", err)
	}
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(jobs.QueueResolve, "r"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("task left behind: %v", err)
	}
	if n := rdb.HGet(ctx, keys.RecordKey("key_r"), keys.FieldCredits).Val(); n != "5" {
		t.Errorf("credits %s, want 5", n)
	}
}

// TestPlanOnClusterNode: a plain client on a node of a Redis Cluster cannot run the submit in
// the admission (its keys span slots): the node refuses it before anything runs, Failed says to
// admit again without it, and the queue submits in two steps from then on (no more Plans).
func TestPlanOnClusterNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node := redistest.StartClusterNode(t).Client(t)
	apiKey(t, node, "key_n")
	q := jobs.NewQueue(node, jobs.NewStore(node, time.Hour), jobs.TaskOptions{})
	l := quota.New(node)
	r := &jobs.Record{ID: "j1", KeyID: "key_n", URL: "https://sho.rt/j1"}
	p := q.Plan(ctx, r, 1, keys.ScopeResolve, noCache)
	_, err := admitWith(t, node, l, p, "key_n")
	if err == nil {
		t.Fatal("a cluster node ran a script across slots")
	}
	retry, ferr := p.Failed(ctx, err)
	if !retry || ferr != nil {
		t.Fatalf("Failed(%v) = %v, %v; want a retry", err, retry, ferr)
	}
	// The pipeline's other command, asynq's set of queues, is of one slot: it ran.
	if n := node.DBSize(ctx).Val(); n != 2 || node.Exists(ctx, jobs.RecordKey("key_n", "j1")).Val() != 0 {
		t.Errorf("%d keys, want only the key record and asynq's queues: %v", n, node.Keys(ctx, "*").Val())
	}
	if q.Plan(ctx, &jobs.Record{ID: "j2", KeyID: "key_n", URL: "https://sho.rt/j2"}, 1, keys.ScopeResolve, noCache) != nil {
		t.Error("a Plan after a cluster node refused one")
	}
	if _, err := q.Submit(ctx, r, 0); err != nil {
		t.Fatalf("submit after: %v", err)
	}
}
