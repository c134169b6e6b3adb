package jobs_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
)

// BenchmarkResolveHandler measures the worker's own cost of a job as in the bench's scenario 4
// (docs/benchmarks.md#the-worker-in-four-round-trips): a queued job of a new link of a local
// one-hop shortener, run by ResolveHandler.ProcessTask on a resolve.Service with leases, one at
// a time. Besides time and allocations it reports the handler's Redis round trips, this process's
// CPU (go-µs) and Redis's own (INFO cpu) per job; the shortener's side of the fetch is in this process too.
//
//	go test -run '^$' -bench ResolveHandler -benchtime 3000x -count 5 ./jobs/
func BenchmarkResolveHandler(b *testing.B) {
	ctx := context.Background()
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusFound)
	}))
	defer site.Close()
	reg, err := resolve.NewRegistry([]resolve.Provider{{ID: "sho", Hosts: []string{"sho.rt"}, Tier: "standard"}})
	if err != nil {
		b.Fatal(err)
	}
	r := resolve.New(resolve.Options{Registry: reg,
		Guard: resolve.GuardOptions{HostOverrides: map[string]string{"sho.rt": strings.TrimPrefix(site.URL, "http://")}}})
	defer r.Close()
	hook := &tripHook{}
	hrdb := srv.Client(b)
	hrdb.AddHook(hook)
	store := jobs.NewStore(hrdb, time.Hour)
	h := &jobs.ResolveHandler{Store: store, Resolver: resolve.NewService(hrdb, r, resolve.ServiceOptions{}),
		Logger: slog.New(slog.DiscardHandler), MaxAttempts: 1, Leases: jobs.NewLeases(hrdb, jobs.LeaseOptions{TTL: time.Minute})}

	tasks := make([]*asynq.Task, b.N)
	for i := range tasks {
		now := time.Now().UTC().Truncate(time.Millisecond)
		rec := jobs.Record{ID: uuid.NewString(), KeyID: "key_bench", Status: jobs.StatusQueued,
			CreatedAt: now, UpdatedAt: now, Hops: []resolve.Hop{}, CreditsHeld: 1}
		u := "http://sho.rt/" + rec.ID
		rec.URL = u
		if err := jobs.NewStore(rdb, time.Hour).Create(ctx, &rec); err != nil {
			b.Fatal(err)
		}
		if tasks[i], err = jobs.NewResolveTask(rec.ID, rec.KeyID, u, jobs.TaskOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	hook.take()
	redisBefore, goBefore := redisCPU(b, rdb), processCPU(b)
	b.ReportAllocs()
	b.ResetTimer()
	for _, task := range tasks {
		if err := h.ProcessTask(ctx, task); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	goCPU := processCPU(b) - goBefore
	n, _ := hook.take()
	b.ReportMetric(float64(goCPU.Microseconds())/float64(b.N), "go-µs/op")
	b.ReportMetric(float64(n)/float64(b.N), "trips/op")
	b.ReportMetric(float64((redisCPU(b, rdb)-redisBefore).Microseconds())/float64(b.N), "redis-µs/op")
}

// processCPU is this process's CPU time so far, user and system.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU is the Redis server's CPU time so far (INFO cpu: user and system, main thread and
// children).
func redisCPU(tb testing.TB, rdb *redis.Client) time.Duration {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var total time.Duration
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "used_cpu_sys" && k != "used_cpu_user") {
			continue
		}
		s, err := strconv.ParseFloat(v, 64)
		if err != nil {
			tb.Fatal(err)
		}
		total += time.Duration(s * float64(time.Second))
	}
	return total
}
