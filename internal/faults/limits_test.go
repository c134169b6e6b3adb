//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestLimitsHoldThroughFaults: two API replicas are hammered by one key with a per-minute
// limit and another with a daily quota, while Redis is killed and restarted and then one
// replica is stopped. The whole run is shorter than a minute, so at most rate_limit_per_minute
// resolves of the first key and daily_quota of the second may ever be accepted, and no more
// jobs than that may exist: a fault may cost a client a slot (a refund that could not be
// written), never add one.
func TestLimitsHoldThroughFaults(t *testing.T) {
	// About 13 requests a second per key: the limits run out around the Redis outage.
	const perMinute, perDay = 50, 40
	s := newStack(t, []string{"--appendonly", "yes", "--appendfsync", "always"})
	apis := []*proc{s.startAPI(), s.startAPI()}
	minuteTok, minuteID := s.newKey("--rate-limit", strconv.Itoa(perMinute))
	dayTok, dayID := s.newKey("--rate-limit", "0", "--daily-quota", strconv.Itoa(perDay))

	var stopped atomic.Bool // replica 0 stopped: clients use replica 1 only
	type tally struct{ accepted, limited, unavailable, other int }
	var mu sync.Mutex
	counts := map[string]*tally{minuteTok: {}, dayTok: {}}
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Second)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := minuteTok
			if g%2 == 1 {
				tok = dayTok
			}
			for ctx.Err() == nil {
				i := n.Add(1)
				api := apis[int(i)%2]
				if stopped.Load() {
					api = apis[1]
				}
				a := call(context.Background(), api.addr, "POST", "/v1/resolve", tok,
					map[string]string{"url": fmt.Sprintf("http://bit.ly/limit-%d", i)})
				mu.Lock()
				c := counts[tok]
				switch {
				case a.err != nil:
					c.other++
				case a.status == http.StatusAccepted || a.status == http.StatusOK:
					c.accepted++
				case a.status == http.StatusTooManyRequests:
					c.limited++
					if a.header.Get("Retry-After") == "" {
						t.Errorf("429 without Retry-After")
					}
				case a.status == http.StatusServiceUnavailable:
					c.unavailable++
				default:
					c.other++
					t.Errorf("unexpected %d %s", a.status, a.raw)
				}
				mu.Unlock()
				time.Sleep(300 * time.Millisecond)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	if err := s.redis.Restart(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	stopped.Store(true)
	apis[0].signal(syscall.SIGTERM)
	wg.Wait()

	for name, k := range map[string]struct {
		tok, id string
		limit   int
	}{"per-minute": {minuteTok, minuteID, perMinute}, "daily": {dayTok, dayID, perDay}} {
		c := counts[k.tok]
		jobs := len(s.jobIDs(k.id))
		t.Logf("%s key: %d accepted, %d limited, %d unavailable, %d other; %d jobs in Redis (limit %d)",
			name, c.accepted, c.limited, c.unavailable, c.other, jobs, k.limit)
		if c.accepted > k.limit || jobs > k.limit {
			t.Errorf("%s limit %d overshot: %d accepted, %d jobs", name, k.limit, c.accepted, jobs)
		}
		if c.limited == 0 {
			t.Errorf("%s key was never limited: the load did not reach the limit", name)
		}
	}
}
