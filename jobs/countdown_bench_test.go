package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// BenchmarkCountdowns measures what parking adlinkfly countdowns buys (docs/benchmarks.md#parking-countdowns):
// 20 gated links with a 1 s countdown on a worker with 4 slots, parked (the default) against
// waited out in place. In place, each slot is held for the whole countdown, so the links take at
// least 20/4 × 1 s; parked, the countdowns overlap.
//
//	go test -run '^$' -bench Countdowns -benchtime 1x ./jobs/
func BenchmarkCountdowns(b *testing.B) {
	for _, tc := range []struct {
		name    string
		parkMin time.Duration
	}{{"parked", resolve.DefaultParkMin}, {"in-place", -1}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				d := runCountdowns(b, tc.parkMin, 20, 4, time.Second)
				b.ReportMetric(d.Seconds(), "s/batch")
				b.ReportMetric(20/d.Seconds(), "links/s")
			}
		})
	}
}

func runCountdowns(b *testing.B, parkMin time.Duration, links, slots int, countdown time.Duration) time.Duration {
	b.Helper()
	rdb := redistest.New(b)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"success","url":"https://example.com/x"}`))
			return
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<script>var app_vars = {"counter_value":"%d"};</script><form id="go-link" action="/links/go"><input type="hidden" name="a" value="b"></form>`,
			int(countdown/time.Second))
	}))
	defer site.Close()
	reg, _ := resolve.NewRegistry([]resolve.Provider{{ID: "alf", Hosts: []string{"alf.test"}, Tier: "premium", Family: "adlinkfly"}})
	r := resolve.New(resolve.Options{Registry: reg, ParkMin: parkMin, PerHostConcurrency: links,
		Guard: resolve.GuardOptions{HostOverrides: map[string]string{"alf.test": strings.TrimPrefix(site.URL, "http://")}}})
	defer r.Close()
	svc := resolve.NewService(rdb, r, resolve.ServiceOptions{})
	store := jobs.NewStore(rdb, time.Hour)
	q := jobs.NewQueue(rdb, store, jobs.TaskOptions{MaxAttempts: 1, Timeout: 20 * time.Second})
	w := jobs.NewWorker(rdb, jobs.WorkerOptions{Concurrency: slots, ShutdownTimeout: time.Second})
	w.Handle(jobs.TypeResolve, &jobs.ResolveHandler{Store: store, Resolver: svc, MaxAttempts: 1, Logger: slog.New(slog.DiscardHandler)}, nil)
	k, err := keys.NewStore(rdb).Create(context.Background(), keys.CreateParams{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	began := time.Now()
	ids := make([]string, links)
	for i := range ids {
		ids[i] = uuid.NewString()
		rec := &jobs.Record{ID: ids[i], KeyID: k.ID, URL: fmt.Sprintf("http://alf.test/%d", i), Provider: "alf", Tier: "premium"}
		if _, err := q.Submit(context.Background(), rec, 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	defer w.Shutdown()
	for _, id := range ids {
		for {
			rec, err := store.Get(context.Background(), k.ID, id)
			if err != nil {
				b.Fatal(err)
			}
			if rec.Status.Terminal() {
				if rec.Status != jobs.StatusDone {
					b.Fatalf("job %s: %s %v", id, rec.Status, *rec.ErrorDetail)
				}
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return time.Since(began)
}
