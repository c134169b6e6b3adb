package quota

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// The benchmarks spread checks over benchKeys API keys with a limit that every check stays
// under (100 per 1 s window against a few hundred checks per key and second), so both
// limiters do their full admitting work on every call, and Redis CPU is what is compared:
// enough goroutines keep it busy.
const (
	benchKeys        = 1000
	benchLimit       = 100
	benchParallelism = 8 // × GOMAXPROCS goroutines
)

func benchIDs() []string {
	ids := make([]string, benchKeys)
	for i := range ids {
		ids[i] = "key_bench" + strconv.Itoa(i)
	}
	return ids
}

// benchCheck measures Limiter.Check with the per-window limit alone, or with a daily quota too
// (the POST /v1/resolve case).
func benchCheck(b *testing.B, rdb redis.UniversalClient, withQuota bool) {
	l := New(rdb, WithWindow(time.Second), WithLocalBlock(false))
	ids := benchIDs()
	lim := Limits{PerMinute: benchLimit, DailyQuota: -1}
	if withQuota {
		lim.DailyQuota = 1 << 40
	}
	ctx := context.Background()
	if _, err := l.Check(ctx, Request{KeyID: "key_warmup", Limits: lim}); err != nil { // loads the script
		b.Fatal(err)
	}
	var next, rejected atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, err := l.Check(ctx, Request{KeyID: ids[next.Add(1)%benchKeys], Limits: lim, CountDay: withQuota})
			if err != nil {
				b.Error(err)
				return
			}
			if !d.Allowed {
				rejected.Add(1)
			}
		}
	})
	b.ReportMetric(float64(rejected.Load())/float64(b.N), "rejected/op")
}

// benchRedisRate measures go-redis/redis_rate's GCRA on the same key spread and limit.
func benchRedisRate(b *testing.B, rdb redis.UniversalClient) {
	l := redis_rate.NewLimiter(rdb)
	ids := benchIDs()
	ctx := context.Background()
	if _, err := l.Allow(ctx, "warmup", redis_rate.PerSecond(benchLimit)); err != nil {
		b.Fatal(err)
	}
	var next, rejected atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := l.Allow(ctx, ids[next.Add(1)%benchKeys], redis_rate.PerSecond(benchLimit))
			if err != nil {
				b.Error(err)
				return
			}
			if res.Allowed == 0 {
				rejected.Add(1)
			}
		}
	})
	b.ReportMetric(float64(rejected.Load())/float64(b.N), "rejected/op")
}

// BenchmarkCheck measures one check, one Redis round trip each.
func BenchmarkCheck(b *testing.B) {
	rdb := redistest.New(b)
	b.Run("minute", func(b *testing.B) { benchCheck(b, rdb, false) })
	b.Run("minute+day", func(b *testing.B) { benchCheck(b, rdb, true) })
}

// BenchmarkRedisRate measures the reference, go-redis/redis_rate v10.
func BenchmarkRedisRate(b *testing.B) {
	benchRedisRate(b, redistest.New(b))
}

// BenchmarkCheckVsRedisRate measures both on one Redis in one run and prints the ratio of
// checks per second (target: at least 0.5, while exact).
func BenchmarkCheckVsRedisRate(b *testing.B) {
	ours, theirs, ratio := compareWithRedisRate(redistest.New(b))
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(ours, "check/s")
	b.ReportMetric(theirs, "redis_rate/s")
}

// TestCompareWithRedisRate prints the same comparison from go test; it takes a few seconds of
// both cores, so it runs only when LINKHOP_BENCH is set.
func TestCompareWithRedisRate(t *testing.T) {
	if os.Getenv("LINKHOP_BENCH") == "" {
		t.Skip("set LINKHOP_BENCH=1 to compare with redis_rate")
	}
	_, _, ratio := compareWithRedisRate(redistest.New(t))
	if ratio < 0.5 {
		t.Logf("below target: ratio %.2f < 0.5", ratio)
	}
}

// compareWithRedisRate measures both limiters on rdb in alternating rounds (so load from
// elsewhere on the machine hits both alike) and prints checks per second and their ratio.
func compareWithRedisRate(rdb redis.UniversalClient) (ours, theirs, ratio float64) {
	const rounds, round = 4, 500 * time.Millisecond
	ctx := context.Background()
	ids := benchIDs()
	l := New(rdb, WithWindow(time.Second), WithLocalBlock(false))
	rl := redis_rate.NewLimiter(rdb)
	lim := Limits{PerMinute: benchLimit, DailyQuota: -1}
	check := func(i int64) error {
		_, err := l.Check(ctx, Request{KeyID: ids[i%benchKeys], Limits: lim})
		return err
	}
	gcra := func(i int64) error {
		_, err := rl.Allow(ctx, ids[i%benchKeys], redis_rate.PerSecond(benchLimit))
		return err
	}
	goroutines := benchParallelism * runtime.GOMAXPROCS(0)
	var nOurs, nTheirs int64
	var tOurs, tTheirs time.Duration
	for range rounds {
		n, d := hammer(goroutines, round, gcra)
		nTheirs, tTheirs = nTheirs+n, tTheirs+d
		n, d = hammer(goroutines, round, check)
		nOurs, tOurs = nOurs+n, tOurs+d
	}
	ours, theirs = float64(nOurs)/tOurs.Seconds(), float64(nTheirs)/tTheirs.Seconds()
	ratio = ours / theirs
	fmt.Printf("quota.Check (exact sliding log): %8.0f checks/s\n", ours)
	fmt.Printf("redis_rate v10 (GCRA):           %8.0f checks/s\n", theirs)
	fmt.Printf("ratio quota/redis_rate: %.2f (target >= 0.50), %d goroutines\n", ratio, goroutines)
	return ours, theirs, ratio
}

// hammer calls fn from g goroutines for about d and returns the calls made and the time taken.
func hammer(g int, d time.Duration, fn func(int64) error) (int64, time.Duration) {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range g {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := fn(next.Add(1)); err != nil {
					panic(err)
				}
			}
		})
	}
	wg.Wait()
	return next.Load(), time.Since(start)
}

// TestRedisRateOvershootsExactDoesNot sends a steady stream of requests for just under one
// window to redis_rate (PerSecond(n): its period cannot be shorter than a second) and to a
// Limiter with a one-second window. GCRA with burst n admits the burst and then refills, up to
// 2n-1 in one window; the sliding log admits n.
func TestRedisRateOvershootsExactDoesNot(t *testing.T) {
	t.Parallel()
	const n = 10
	const span = 950 * time.Millisecond // under one window, past 9 GCRA refills
	ctx := context.Background()

	t.Run("redis_rate", func(t *testing.T) {
		t.Parallel()
		rl := redis_rate.NewLimiter(newRedis(t))
		admitted := 0
		for start := time.Now(); time.Since(start) < span; time.Sleep(2 * time.Millisecond) {
			res, err := rl.Allow(ctx, "k", redis_rate.PerSecond(n))
			if err != nil {
				t.Fatal(err)
			}
			admitted += res.Allowed
		}
		t.Logf("redis_rate PerSecond(%d) admitted %d within %v of one window", n, admitted, span)
		if admitted <= n {
			t.Fatalf("redis_rate admitted %d in under one window; expected an overshoot towards %d", admitted, 2*n-1)
		}
	})

	t.Run("quota", func(t *testing.T) {
		t.Parallel()
		l := New(newRedis(t), WithWindow(time.Second), WithLocalBlock(false))
		r := Request{KeyID: "key_o", Limits: Limits{PerMinute: n, DailyQuota: -1}}
		var times []time.Time // Redis times of the admitted requests
		for start := time.Now(); time.Since(start) < 2*time.Second; time.Sleep(2 * time.Millisecond) {
			d := mustCheck(t, l, r)
			if d.Allowed {
				times = append(times, d.Now)
			}
		}
		// At every admission, the admissions in the window (t - 1 s, t] number at most n.
		most := 0
		for i, ti := range times {
			c := 0
			for _, tj := range times[:i+1] {
				if tj.After(ti.Add(-time.Second)) {
					c++
				}
			}
			most = max(most, c)
		}
		t.Logf("quota admitted at most %d in any window of 1 s (%d in 2 s)", most, len(times))
		if most != n {
			t.Fatalf("at most %d admitted in one window, want exactly %d", most, n)
		}
	})
}
