package webhooks

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/linkhop/linkhop/internal/redistest"
)

func TestReserveHoldsBackWithoutRecording(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	ctx := context.Background()
	l := NewRateLimiter(rdb, 3)
	url := "https://hooks.example/a"
	for i := range 3 {
		if wait, err := l.Reserve(ctx, url); err != nil || wait != 0 {
			t.Fatalf("reservation %d: wait %s, err %v", i, wait, err)
		}
	}
	for range 5 {
		wait, err := l.Reserve(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if wait <= 0 || wait > time.Second+RateGuard {
			t.Fatalf("held back with wait %s", wait)
		}
	}
	if n := rdb.ZCard(ctx, rateKey(url)).Val(); n != 3 {
		t.Fatalf("log holds %d entries after 3 admissions and 5 refusals", n)
	}
	if ttl := rdb.PTTL(ctx, rateKey(url)).Val(); ttl <= 0 || ttl > 3*time.Second {
		t.Errorf("log TTL %s: idle URLs must not stay in Redis", ttl)
	}
	// Another URL has its own log.
	if wait, err := l.Reserve(ctx, "https://hooks.example/b"); err != nil || wait != 0 {
		t.Fatalf("other url: wait %s, err %v", wait, err)
	}
	// Same receiver spelled differently shares the log.
	if wait, _ := l.Reserve(ctx, "HTTPS://Hooks.Example:443/a#frag"); wait == 0 {
		t.Error("a respelling of the URL escaped its limit")
	}
	// After the wait, a slot is free again.
	wait, _ := l.Reserve(ctx, url)
	time.Sleep(wait)
	if wait, err := l.Reserve(ctx, url); err != nil || wait != 0 {
		t.Fatalf("after waiting: wait %s, err %v", wait, err)
	}
}

// hammer runs n deliveries to one URL through the limiters (round robin), each retrying after
// the wait it is given, as held-back tasks do. It returns, for every admission, the Go time
// right after Reserve returned and the Redis time the script admitted it at.
func hammer(t *testing.T, limiters []*RateLimiter, url string, n int) (goTimes []time.Time, redisMicros []int64) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx := context.Background()
	for i := range n {
		wg.Go(func() {
			l := limiters[i%len(limiters)]
			for {
				wait, at, err := l.reserve(ctx, url)
				if err != nil {
					t.Error(err)
					return
				}
				if wait == 0 {
					now := time.Now()
					mu.Lock()
					goTimes = append(goTimes, now)
					redisMicros = append(redisMicros, at)
					mu.Unlock()
					return
				}
				time.Sleep(wait)
			}
		})
	}
	wg.Wait()
	return goTimes, redisMicros
}

// maxInSpan is the most entries of sorted times in any half-open span [x, x+span).
func maxInSpan(sorted []int64, span int64) int {
	best := 0
	j := 0
	for i := range sorted {
		for sorted[i]-sorted[j] >= span {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// The check: two limiters on two connections, 40 reservations to one URL, and the
// admission log never has more than 10 in any 1 s span — on Redis's clock with no guard (the
// exactness of the script itself), and on the callers' clock with the guard (what receivers
// see). Each subtest takes about 3 s of mostly sleeping; they run in parallel.
func TestRateLimiterExactAcrossProcesses(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const perSecond, events = 10, 40
	t.Run("redis clock, no guard", func(t *testing.T) {
		t.Parallel()
		ls := []*RateLimiter{newRateLimiter(srv.Client(t), perSecond, time.Second), newRateLimiter(srv.Client(t), perSecond, time.Second)}
		_, micros := hammer(t, ls, "https://hooks.example/exact", events)
		if len(micros) != events {
			t.Fatalf("%d admissions", len(micros))
		}
		slices.Sort(micros)
		if got := maxInSpan(micros, time.Second.Microseconds()); got != perSecond {
			t.Errorf("max %d admissions in a 1 s span, want exactly %d", got, perSecond)
		}
		// Exact also means not needlessly slow: 40 at 10/s need just over 3 s of windows.
		if span := time.Duration(micros[len(micros)-1]-micros[0]) * time.Microsecond; span < 3*time.Second || span > 6*time.Second {
			t.Errorf("40 admissions spread over %s", span)
		}
	})
	t.Run("caller clock, with guard", func(t *testing.T) {
		t.Parallel()
		ls := []*RateLimiter{NewRateLimiter(srv.Client(t), perSecond), NewRateLimiter(srv.Client(t), perSecond)}
		goTimes, _ := hammer(t, ls, "https://hooks.example/guarded", events)
		nanos := make([]int64, len(goTimes))
		for i, gt := range goTimes {
			nanos[i] = gt.UnixNano()
		}
		slices.Sort(nanos)
		if got := maxInSpan(nanos, int64(time.Second)); got > perSecond {
			t.Errorf("max %d arrivals in a 1 s span, want at most %d", got, perSecond)
		}
	})
}

func TestRateLimiterSeparateURLs(t *testing.T) {
	t.Parallel()
	l := NewRateLimiter(redistest.New(t), 10)
	start := time.Now()
	var wg sync.WaitGroup
	for _, u := range []string{"https://a.example/", "https://b.example/", "https://c.example/", "https://d.example/"} {
		wg.Go(func() { hammer(t, []*RateLimiter{l}, u, 10) })
	}
	wg.Wait()
	// 40 events over 4 URLs fit into each URL's first second; to one URL they need 3 more.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("4 URLs × 10 events took %s; each URL should have its own budget", d)
	}
}

func TestNormalizeURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://Hooks.Example/a?b=1", "https://hooks.example/a?b=1"},
		{"HTTPS://hooks.example:443/a", "https://hooks.example/a"},
		{"http://hooks.example:80/a", "http://hooks.example/a"},
		{"https://hooks.example:8443/a", "https://hooks.example:8443/a"},
		{"https://hooks.example/a#x", "https://hooks.example/a"},
		{"https://[2001:DB8::1]:443/a", "https://[2001:db8::1]/a"},
		{"https://hooks.example/A", "https://hooks.example/A"},
		{"not a url", "not a url"},
	}
	for _, tt := range tests {
		if got := normalizeURL(tt.in); got != tt.want {
			t.Errorf("normalizeURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAcquireCapsAttemptsInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	l := NewRateLimiter(rdb, 100)
	const url = "https://hooks.example/slow"
	var leases []Lease
	for i := range 3 {
		lease, wait, err := l.Acquire(ctx, url, 3, time.Minute)
		if err != nil || wait != 0 {
			t.Fatalf("attempt %d: wait %v, err %v", i, wait, err)
		}
		leases = append(leases, lease)
	}
	_, wait, err := l.Acquire(ctx, url, 3, time.Minute)
	if err != nil || wait <= 0 || wait > time.Second {
		t.Fatalf("over the cap: wait %v, err %v; want a wait of at most 1s", wait, err)
	}
	// Another URL has its own cap.
	if _, wait, _ := l.Acquire(ctx, "https://hooks.example/other", 3, time.Minute); wait != 0 {
		t.Errorf("other URL held back: %v", wait)
	}
	if err := leases[0].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, wait, err := l.Acquire(ctx, url, 3, time.Minute); err != nil || wait != 0 {
		t.Fatalf("after a release: wait %v, err %v", wait, err)
	}
	// A lease that is never released (a crashed worker) expires.
	_, _, _ = l.Acquire(ctx, "https://hooks.example/crash", 1, 50*time.Millisecond)
	time.Sleep(80 * time.Millisecond)
	if _, wait, err := l.Acquire(ctx, "https://hooks.example/crash", 1, time.Minute); err != nil || wait != 0 {
		t.Fatalf("expired lease still held: wait %v, err %v", wait, err)
	}
	// A held-back attempt took nothing.
	if n := rdb.ZCard(ctx, leaseKey(url)).Val(); n != 3 {
		t.Errorf("leases in flight %d, want 3", n)
	}
}
