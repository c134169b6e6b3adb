package httpapi_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// counter counts Redis round trips: one per command, one per pipeline.
type counter struct{ n atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// docs/benchmarks.md#targets: 1 round trip for an accepted resolve on a single Redis (the job
// submitted in the admission's script), 1 for a cached link, 1 for a poll.
func TestRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	var c counter
	e.rdb.AddHook(&c)
	_, tok := e.key(keys.CreateParams{Credits: ptr[int64](100), DailyQuota: ptr[int64](100)})
	// Warm up: Redis learns the scripts (the first use of each costs a NOSCRIPT round trip).
	first := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/warm", "idempotency_key": "w"})
	if first.status != 202 {
		t.Fatalf("%d %s", first.status, first.raw)
	}
	id := first.body["job_id"].(string)
	e.do("GET", "/v1/jobs/"+id, tok, nil)

	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"plain", map[string]any{"url": "https://sho.rt/a"}},
		{"idempotent", map[string]any{"url": "https://sho.rt/b", "idempotency_key": "k1"}},
	} {
		c.n.Store(0)
		r := e.do("POST", "/v1/resolve", tok, tc.body)
		if r.status != 202 {
			t.Fatalf("%s: %d %s", tc.name, r.status, r.raw)
		}
		if n := c.n.Load(); n != 1 {
			t.Errorf("%s resolve: %d round trips, want 1 (auth+limit+cache+job with its enqueue)", tc.name, n)
		}
	}
	e.cache("https://sho.rt/cached", `{"state":"done","url":"https://sho.rt/cached","target_url":"https://example.com/x"}`)
	c.n.Store(0)
	if r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/cached"}); r.status != 200 || r.body["cached"] != true {
		t.Fatalf("cached: %d %s", r.status, r.raw)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("cached resolve: %d round trips, want 1", n)
	}
	c.n.Store(0)
	if r := e.do("GET", "/v1/jobs/"+id, tok, nil); r.status != 200 {
		t.Fatalf("poll %d", r.status)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("poll: %d round trips, want 1", n)
	}
}

// docs/benchmarks.md#targets: at most 5 round trips for a batch whatever its size (2 on a single
// Redis: admission with the cache lookups in one MGET, then one script that creates the jobs and
// enqueues their tasks), 1 for a list of jobs.
func TestRoundTripsBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{tweakCfg: func(c *config.Config) { c.BatchMaxItems = 1000 }})
	var c counter
	e.rdb.AddHook(&c)
	_, tok := e.key(keys.CreateParams{RateLimit: ptr(0), Credits: ptr[int64](5000), DailyQuota: ptr[int64](5000)})
	body := func(prefix string, n int) map[string]any {
		its := make([]map[string]any, n)
		for i := range its {
			its[i] = map[string]any{"url": "https://sho.rt/" + prefix + strconv.Itoa(i)}
			if i%3 == 0 {
				its[i]["idempotency_key"] = prefix + strconv.Itoa(i)
			}
		}
		return map[string]any{"items": its}
	}
	// Warm up: Redis learns the scripts.
	if r := e.do("POST", "/v1/resolve/batch", tok, body("w", 2)); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	var ids []string
	for _, n := range []int{1, 100, 1000} {
		c.n.Store(0)
		r := e.do("POST", "/v1/resolve/batch", tok, body("n"+strconv.Itoa(n)+"-", n))
		got := entries(t, r)
		t.Logf("a %d-item batch: %d round trips", n, c.n.Load())
		if got := c.n.Load(); got != 2 {
			t.Errorf("a %d-item batch: %d round trips, want 2", n, got)
		}
		for _, it := range got {
			if it["status"] != "queued" {
				t.Fatalf("item %v", it)
			}
			if len(ids) < 100 {
				ids = append(ids, it["job_id"].(string))
			}
		}
	}
	// Replays of a whole batch: still the same bound.
	c.n.Store(0)
	entries(t, e.do("POST", "/v1/resolve/batch", tok, body("n100-", 100)))
	if got := c.n.Load(); got > 5 {
		t.Errorf("a replayed batch: %d round trips, want at most 5", got)
	}
	c.n.Store(0)
	if r := e.do("GET", "/v1/jobs?ids="+strings.Join(ids, ","), tok, nil); r.status != 200 {
		t.Fatalf("jobs %d %s", r.status, r.raw)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("GET /v1/jobs?ids= with 100 ids: %d round trips, want 1", n)
	}
}

// docs/benchmarks.md#targets: on Redis Cluster (three primaries) an accepted resolve is 3 round
// trips: the job's slot and asynq's queue are on different nodes, so the job is created before
// its task is enqueued (jobs.Queue.Submit).
func TestRoundTripsCluster(t *testing.T) {
	t.Parallel()
	prim, _ := redistest.Cluster(t, 3, 0, redis.Options{})
	cc := redistest.ClusterClient(t, prim)
	cfg, err := config.Load(config.API, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.RedisClusterAddrs = cc.Options().Addrs
	reg, err := resolve.NewRegistry([]resolve.Provider{{ID: "short", Label: "Short", Hosts: []string{"sho.rt"}, Tier: resolve.TierStandard}})
	if err != nil {
		t.Fatal(err)
	}
	r := resolve.New(resolve.Options{Registry: reg})
	t.Cleanup(r.Close)
	h, err := app.NewAPI(cfg, cc, slog.New(slog.DiscardHandler), reg, resolve.NewService(cc, r, resolve.ServiceOptions{}), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, api: httptest.NewServer(h), keys: keys.NewStore(cc), jobs: jobs.NewStore(cc, cfg.JobRetention)}
	t.Cleanup(e.api.Close)
	var c counter
	cc.AddHook(&c)
	ctx := context.Background()
	queue, err := cc.MasterForKey(ctx, "asynq:{resolve}:pending")
	if err != nil {
		t.Fatal(err)
	}
	// A key whose slot is on another primary than the queue's (two in three are).
	var k keys.Created
	var tok string
	for {
		k, tok = e.key(keys.CreateParams{Credits: ptr[int64](100), DailyQuota: ptr[int64](100)})
		n, err := cc.MasterForKey(ctx, keys.RecordKey(k.ID))
		if err != nil {
			t.Fatal(err)
		}
		if n.Options().Addr != queue.Options().Addr {
			break
		}
	}
	if r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "https://sho.rt/warm", "idempotency_key": "w"}); r.status != 202 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	for _, body := range []map[string]any{{"url": "https://sho.rt/a"}, {"url": "https://sho.rt/b", "idempotency_key": "k1"}} {
		c.n.Store(0)
		r := e.do("POST", "/v1/resolve", tok, body)
		if r.status != 202 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		if n := c.n.Load(); n != 3 {
			t.Errorf("%v: %d round trips, want 3 (auth+limit+cache, job, enqueue)", body, n)
		}
		if _, err := e.jobs.Get(ctx, k.ID, r.body["job_id"].(string)); err != nil {
			t.Errorf("job: %v", err)
		}
	}
}
