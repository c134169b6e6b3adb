package jobs_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
)

// tripHook counts round trips: one per command sent alone, one per pipeline.
type tripHook struct {
	mu    sync.Mutex
	n     int
	names []string
}

func (h *tripHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *tripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n != "hello" && n != "client" { // a new connection's setup
			h.add(n)
		}
		return next(ctx, cmd)
	}
}
func (h *tripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, 0, len(cmds))
		for _, c := range cmds {
			if n := c.Name(); n != "client" {
				names = append(names, n)
			}
		}
		if len(names) > 0 {
			h.add("pipeline(" + strings.Join(names, ",") + ")")
		}
		return next(ctx, cmds)
	}
}
func (h *tripHook) add(name string) {
	h.mu.Lock()
	h.n++
	h.names = append(h.names, name)
	h.mu.Unlock()
}
func (h *tripHook) take() (int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, names := h.n, h.names
	h.n, h.names = 0, nil
	return n, names
}

// TestResolveHandlerRoundTrips: a job whose link is resolved upstream costs the handler three
// round trips (lease and record; running, cache read and lock; outcome and finished record),
// leaves its outcome in the cache and the lock released; a job of the same link then takes
// the cached outcome without fetching.
func TestResolveHandlerRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var fetches sync.Map
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := fetches.LoadOrStore(r.URL.Path, new(int))
		*n.(*int)++
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusFound)
	}))
	defer site.Close()
	reg, err := resolve.NewRegistry([]resolve.Provider{{ID: "sho", Hosts: []string{"sho.rt"}, Tier: "standard"}})
	if err != nil {
		t.Fatal(err)
	}
	r := resolve.New(resolve.Options{Registry: reg,
		Guard: resolve.GuardOptions{HostOverrides: map[string]string{"sho.rt": strings.TrimPrefix(site.URL, "http://")}}})
	defer r.Close()

	hook := &tripHook{}
	hrdb := srv.Client(t)
	hrdb.AddHook(hook)
	store := jobs.NewStore(hrdb, time.Hour)
	leases := jobs.NewLeases(hrdb, jobs.LeaseOptions{TTL: time.Minute})
	h := &jobs.ResolveHandler{Store: store, Resolver: resolve.NewService(hrdb, r, resolve.ServiceOptions{}),
		Logger: slog.New(slog.DiscardHandler), MaxAttempts: 1, Leases: leases}

	run := func(path string) (jobs.Record, int, []string) {
		t.Helper()
		rec := queuedJob(t, jobs.NewStore(rdb, time.Hour), "key_trips")
		if _, err := jobs.NewStore(rdb, time.Hour).Update(ctx, rec.KeyID, rec.ID, func(r *jobs.Record) error {
			r.URL = "http://sho.rt" + path
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		task, err := jobs.NewResolveTask(rec.ID, rec.KeyID, jobs.TaskOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hook.take()
		if err := h.ProcessTask(ctx, task); err != nil {
			t.Fatal(err)
		}
		n, names := hook.take()
		got, err := store.Get(ctx, rec.KeyID, rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got, n, names
	}

	got, n, names := run("/a")
	if got.Status != jobs.StatusDone || got.TargetURL == nil || *got.TargetURL != "https://example.com/dest/a" {
		t.Fatalf("job %s, target %v, error %v %v", got.Status, got.TargetURL, ptrStr(got.Error), ptrStr(got.ErrorDetail))
	}
	if n != 3 {
		t.Fatalf("%d round trips %v, want 3", n, names)
	}
	if keys := rdb.Keys(ctx, "linkhop:resolve:*:lock").Val(); len(keys) != 0 {
		t.Fatalf("locks left behind: %v", keys)
	}
	if cached, found, _, err := resolve.NewService(rdb, r, resolve.ServiceOptions{}).Lookup(ctx, "http://sho.rt/a"); err != nil || !found || cached.TargetURL != *got.TargetURL {
		t.Fatalf("cache: found %v (%v)", found, err)
	}

	got, _, _ = run("/a")
	if got.Status != jobs.StatusDone || *got.TargetURL != "https://example.com/dest/a" {
		t.Fatalf("second job %s, target %v", got.Status, got.TargetURL)
	}
	if n, _ := fetches.Load("/a"); *n.(*int) != 1 {
		t.Fatalf("the link was fetched %d times, want once (the second job takes the cached outcome)", *n.(*int))
	}
	if keys := rdb.Keys(ctx, "linkhop:resolve:*:lock").Val(); len(keys) != 0 {
		t.Fatalf("locks left behind after a cached answer: %v", keys)
	}
}

func ptrStr(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}
