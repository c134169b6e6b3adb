package httpapi_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/keys"
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

// docs/benchmarks.md#targets: at most 3 round trips for an accepted resolve, 1 for a poll.
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
		if n := c.n.Load(); n != 3 {
			t.Errorf("%s resolve: %d round trips, want 3 (auth+limit+cache, job, enqueue)", tc.name, n)
		}
	}
	c.n.Store(0)
	if r := e.do("GET", "/v1/jobs/"+id, tok, nil); r.status != 200 {
		t.Fatalf("poll %d", r.status)
	}
	if n := c.n.Load(); n != 1 {
		t.Errorf("poll: %d round trips, want 1", n)
	}
}
