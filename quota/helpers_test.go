package quota

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// testClock is a settable Redis clock for the script's test hook, so boundaries can be probed
// to the microsecond.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// withClock makes the script use c instead of Redis TIME. The local memory of 429s works on
// the process clock, so it is switched off.
func withClock(c *testClock) Option {
	return func(l *Limiter) {
		l.fixedNow = c.Now
		l.blocked = nil
	}
}

// cmdCounter is a go-redis hook counting the commands (and pipelines) sent.
type cmdCounter struct{ n atomic.Int64 }

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

func mustCheck(t *testing.T, l *Limiter, r Request) Decision {
	t.Helper()
	d, err := l.Check(context.Background(), r)
	if err != nil {
		t.Fatalf("Check(%+v): %v", r, err)
	}
	return d
}

// baseTime is a fixed time safely in the future of the real clock but not past the current
// UTC day's end, rounded to a whole second plus 250 ms so that rounding shows.
func baseTime() time.Time {
	return time.Now().UTC().Truncate(time.Second).Add(2*time.Second + 250*time.Millisecond)
}

func newRedis(t *testing.T) *redis.Client { return redistest.New(t) }
