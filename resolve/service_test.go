package resolve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// roundTrips counts commands and pipelines sent by a client: each is one round trip.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// counted wraps h so that it counts upstream requests.
func counted(n *atomic.Int64, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { n.Add(1); h(w, r) }
}

func TestServiceCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	var upstream atomic.Int64
	e.handle("short.test/x", counted(&upstream, redirect("https://dest.example/x", http.StatusFound)))
	rdb := redistest.New(t)
	s := NewService(rdb, e.res, ServiceOptions{})

	res, err := s.Resolve(ctxT(t), "http://short.test/x")
	if err != nil || res.TargetURL != "https://dest.example/x" || res.Cached {
		t.Fatalf("first resolve: %+v %v", res, err)
	}
	// Another spelling of the same link is served from the cache.
	res, err = s.Resolve(ctxT(t), "HTTP://SHORT.test:80/x#top")
	if err != nil || res.TargetURL != "https://dest.example/x" || !res.Cached || res.URL != "HTTP://SHORT.test:80/x#top" {
		t.Errorf("cached resolve: %+v %v", res, err)
	}
	if n := upstream.Load(); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
	if ttl := rdb.TTL(ctxT(t), keysFor("http://short.test/x").rec).Val(); ttl < 23*time.Hour || ttl > DefaultCacheTTL {
		t.Errorf("cache TTL %s, want RESOLVE_CACHE_TTL", ttl)
	}

	// Lookup: exactly one round trip, hit and miss.
	var rt roundTrips
	rdb.AddHook(&rt)
	got, found, removed, err := s.Lookup(ctxT(t), "http://short.test/x")
	if err != nil || !found || removed || got.TargetURL != "https://dest.example/x" || got.Provider.ID != "short" || len(got.Hops) != 2 {
		t.Errorf("Lookup hit: %+v %v %v %v", got, found, removed, err)
	}
	if _, found, removed, err := s.Lookup(ctxT(t), "http://short.test/unknown"); err != nil || found || removed {
		t.Errorf("Lookup miss: %v %v %v", found, removed, err)
	}
	if n := rt.n.Load(); n != 2 {
		t.Errorf("two Lookups took %d round trips, want 2", n)
	}
	if _, _, _, err := s.Lookup(ctxT(t), "ftp://short.test/x"); !errors.Is(err, ErrUnsupportedURL) {
		t.Errorf("Lookup of a bad URL: %v", err)
	}
}

func TestServiceNegativeCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	var upstream atomic.Int64
	e.handle("short.test/gone", counted(&upstream, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) }))
	rdb := redistest.New(t)
	s := NewService(rdb, e.res, ServiceOptions{NegativeTTL: time.Minute})
	for i := range 3 {
		_, err := s.Resolve(ctxT(t), "http://short.test/gone")
		if re := asError(t, err); re.Code != CodeLinkRemoved || re.Transient {
			t.Errorf("attempt %d: %+v", i, re)
		}
	}
	if n := upstream.Load(); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
	if _, found, removed, err := s.Lookup(ctxT(t), "http://short.test/gone"); err != nil || found || !removed {
		t.Errorf("Lookup: found=%v removed=%v %v", found, removed, err)
	}
	if ttl := rdb.TTL(ctxT(t), keysFor("http://short.test/gone").rec).Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("negative TTL %s", ttl)
	}
}

// TestServiceOneUpstream: 50 concurrent resolves of one URL through two Service instances (two
// worker processes, each with its own resolver and Redis client) make one upstream request.
func TestServiceOneUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	var upstream atomic.Int64
	e.handle("short.test/hot", counted(&upstream, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond) // long enough for every job to arrive while it runs
		redirect("https://dest.example/hot", http.StatusFound)(w, r)
	}))
	srv := redistest.Start(t)
	services := []*Service{
		NewService(srv.Client(t), e.res, ServiceOptions{PollInterval: 10 * time.Millisecond}),
		NewService(srv.Client(t), e.newResolver(t), ServiceOptions{PollInterval: 10 * time.Millisecond}),
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := services[i%2].Resolve(ctxT(t), "http://short.test/hot")
			if err == nil && res.TargetURL != "https://dest.example/hot" {
				err = fmt.Errorf("target %q", res.TargetURL)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := upstream.Load(); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
}

// TestServiceSharedFailure: waiters take the lock holder's failure, but a later attempt (a
// retry) resolves afresh instead of reading an old failure.
func TestServiceSharedFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	var upstream atomic.Int64
	e.handle("short.test/down", counted(&upstream, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	srv := redistest.Start(t)
	a := NewService(srv.Client(t), e.res, ServiceOptions{PollInterval: 10 * time.Millisecond})
	b := NewService(srv.Client(t), e.newResolver(t), ServiceOptions{PollInterval: 10 * time.Millisecond})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			_, err := s.Resolve(ctxT(t), "http://short.test/down")
			var re *Error
			if !errors.As(err, &re) || re.Code != CodeProviderDown || !re.Transient || re.RetryAfter != 2*time.Second {
				t.Errorf("resolve %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if n := upstream.Load(); n != 1 {
		t.Errorf("%d upstream requests, want 1", n)
	}
	if _, err := a.Resolve(ctxT(t), "http://short.test/down"); err == nil {
		t.Error("retry should fail too")
	}
	if n := upstream.Load(); n != 2 {
		t.Errorf("the retry made %d upstream requests in all, want 2", n)
	}
}

// TestServiceLockHolderGone: a lock left by a crashed worker delays others only until it expires.
func TestServiceLockHolderGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/y", redirect("https://dest.example/y", http.StatusFound))
	rdb := redistest.New(t)
	s := NewService(rdb, e.res, ServiceOptions{PollInterval: 10 * time.Millisecond})
	if err := rdb.Set(ctxT(t), keysFor("http://short.test/y").lock, "crashed-worker", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := s.Resolve(ctxT(t), "http://short.test/y")
	if err != nil || res.TargetURL != "https://dest.example/y" {
		t.Fatalf("%+v %v", res, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("resolved after %s, before the stale lock expired", d)
	}
	if n, _ := rdb.Exists(ctxT(t), keysFor("http://short.test/y").lock).Result(); n != 0 {
		t.Error("lock not released")
	}
}

func TestServiceCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		redirect("https://dest.example/slow", http.StatusFound)(w, r)
	})
	rdb := redistest.New(t)
	s := NewService(rdb, e.res, ServiceOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Resolve(ctx, "http://short.test/slow")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the caller's deadline", err)
	}
	// The detached upstream resolve still completes and fills the cache for the next job.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, found, _, _ := s.Lookup(ctxT(t), "http://short.test/slow"); found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("result never cached")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServiceLatencySampled holds a Service to at most one recorded duration of a provider per
// LatencyEvery: a burst of resolves writes the provider's list once, and a resolve after the
// gap writes it again.
func TestServiceLatencySampled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/", redirect("https://dest.example/", http.StatusFound))
	rdb := redistest.New(t)
	const every = 300 * time.Millisecond
	s := NewService(rdb, e.res, ServiceOptions{LatencyEvery: every})
	resolveN := func(from, n int) {
		t.Helper()
		for i := range n {
			if _, err := s.Resolve(ctxT(t), fmt.Sprintf("http://short.test/%d", from+i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	resolveN(0, 5)
	n := rdb.LLen(ctxT(t), latencyKey("short")).Val()
	if time.Since(start) < every && n != 1 {
		t.Fatalf("%d durations recorded by 5 resolves within %s, want 1", n, every)
	}
	time.Sleep(every)
	resolveN(5, 1)
	if m := rdb.LLen(ctxT(t), latencyKey("short")).Val(); m != n+1 {
		t.Fatalf("%d durations recorded after a resolve past the gap, want %d", m, n+1)
	}
	if _, ok := s.latencyAt.Load("hop"); ok {
		t.Error("a provider that was not resolved has a recording time")
	}
}

func TestServiceLatencies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		redirect("https://dest.example"+r.URL.Path, http.StatusFound)(w, r)
	})
	rdb := redistest.New(t)
	s := NewService(rdb, e.res, ServiceOptions{LatencySamples: 3, LatencyEvery: -1})
	for i := range 5 {
		if _, err := s.Resolve(ctxT(t), fmt.Sprintf("http://short.test/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	lat, err := s.Latencies(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := lat["short"]; !ok || d < 30*time.Millisecond || d > 5*time.Second {
		t.Errorf("latency of short = %s %v", d, ok)
	}
	if _, ok := lat["hop"]; ok {
		t.Error("unmeasured provider has a latency")
	}
	if n := rdb.LLen(ctxT(t), latencyKey("short")).Val(); n != 3 {
		t.Errorf("%d samples kept, want 3", n)
	}
	provs, err := s.Providers(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range provs {
		if p.ID == "short" && (!strings.HasPrefix(p.Latency, "~") || !strings.HasSuffix(p.Latency, "ms")) {
			t.Errorf("short latency string %q", p.Latency)
		}
	}
	if keys := rdb.Keys(ctxT(t), "*").Val(); len(keys) == 0 {
		t.Error("no keys")
	} else {
		for _, k := range keys {
			if !strings.HasPrefix(k, "linkhop:resolve:") {
				t.Errorf("key %q outside linkhop:resolve:", k)
			}
		}
	}
}

func TestServiceUnsupported(t *testing.T) {
	t.Parallel()
	s := NewService(redistest.New(t), New(Options{}), ServiceOptions{})
	for _, raw := range []string{"ftp://bit.ly/x", "https://example.com/"} {
		_, err := s.Resolve(ctxT(t), raw)
		if re := asError(t, err); re.Code != CodeUnsupportedLink {
			t.Errorf("%s: %+v", raw, re)
		}
	}
}

// fakeHolders is a LockHolder whose living processes are listed.
type fakeHolders struct {
	id    string
	mu    sync.Mutex
	alive map[string]bool
	asked atomic.Int64
}

func (f *fakeHolders) ID() string { return f.id }
func (f *fakeHolders) Alive(_ context.Context, id string) (bool, error) {
	f.asked.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.alive[id], nil
}

func (f *fakeHolders) kill(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.alive, id)
}

// TestServiceLockOfDeadHolderTakenOver: a lock whose holder's process is dead is taken over
// at once, not waited out until its TTL (which here outlasts the test); a live holder's lock is
// waited on, and the lock the takeover leads with names this process.
func TestServiceLockOfDeadHolderTakenOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	e.handle("short.test/dead", redirect("https://dest.example/dead", http.StatusFound))
	rdb := redistest.New(t)
	s := NewService(rdb, e.res, ServiceOptions{PollInterval: 10 * time.Millisecond, LockTTL: 10 * time.Minute})
	h := &fakeHolders{id: "me", alive: map[string]bool{"me": true, "live": true}}
	ctx := WithLockHolder(ctxT(t), h)
	k := keysFor("http://short.test/dead")
	if err := rdb.Set(ctx, k.lock, "tok@killed", 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	res, err := s.Resolve(ctx, "http://short.test/dead")
	if err != nil || res.TargetURL != "https://dest.example/dead" {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := rdb.Exists(ctx, k.lock).Result(); n != 0 {
		t.Error("the taken-over lock was not released")
	}

	// A live holder is waited for: its outcome is taken when it publishes.
	e.handle("short.test/live", redirect("https://dest.example/live", http.StatusFound))
	kl := keysFor("http://short.test/live")
	if err := rdb.Set(ctx, kl.lock, "tok2@live", 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Resolve(ctx, "http://short.test/live")
		done <- err
	}()
	for h.asked.Load() < 3 { // the waiter asked about the live holder more than once
		select {
		case err := <-done:
			t.Fatalf("resolved while a live holder held the lock: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if v, _ := rdb.Get(ctx, kl.lock).Result(); v != "tok2@live" {
		t.Fatalf("lock %q, want the live holder's", v)
	}
	// The holder dies: the waiter takes over and resolves.
	h.kill("live")
	if err := <-done; err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
}
