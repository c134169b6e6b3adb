package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"
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

// tripEnv is a resolve handler on a real resolve.Service whose links are served by a local
// site, with its Redis calls counted.
type tripEnv struct {
	rdb     *redis.Client // uncounted: the test's own reads and writes
	hook    *tripHook
	h       *jobs.ResolveHandler
	store   *jobs.Store
	svc     *resolve.Service
	fetches sync.Map // path → *atomic.Int64
	// onGo, when set, is called when AdLinkFly's form is posted (the resumed walk).
	onGo atomic.Pointer[func()]
	// written lists the statuses of the job records written, in order.
	writtenMu sync.Mutex
	written   []jobs.Status
}

// newTripEnv serves sho.rt (a redirect to https://example.com/dest<path>, after gate when
// the path is /slow) and alf.test (an AdLinkFly page with a 1 s countdown).
func newTripEnv(t *testing.T, gate chan struct{}) *tripEnv {
	t.Helper()
	srv := redistest.Start(t)
	e := &tripEnv{rdb: srv.Client(t), hook: &tripHook{}}
	var mu sync.Mutex
	shown := map[string]time.Time{}
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := e.fetches.LoadOrStore(r.Host+r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		switch {
		case r.Host == "alf.test" && r.URL.Path == "/links/go":
			if f := e.onGo.Load(); f != nil {
				(*f)()
			}
			c, err := r.Cookie("csrfToken")
			if err != nil || r.PostFormValue("_csrfToken") != c.Value {
				http.Error(w, "csrf", http.StatusForbidden)
				return
			}
			mu.Lock()
			at := shown[c.Value]
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			if time.Since(at) < 900*time.Millisecond {
				_, _ = w.Write([]byte(`{"status":"error","message":"too early"}`))
				return
			}
			_, _ = w.Write([]byte(`{"status":"success","url":"https://example.com/after-countdown"}`))
		case r.Host == "alf.test":
			tok := uuid.NewString()
			mu.Lock()
			shown[tok] = time.Now()
			mu.Unlock()
			http.SetCookie(w, &http.Cookie{Name: "csrfToken", Value: tok, Path: "/"})
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<html><head><script>var app_vars = {"counter_value":"1"};</script></head><body>
<form id="go-link" action="/links/go" method="post"><input type="hidden" name="_csrfToken" value="%s">
<input type="hidden" name="ad_form_data" value="abc"></form></body></html>`, tok)
		default:
			if r.URL.Path == "/slow" && gate != nil {
				<-gate
			}
			http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusFound)
		}
	}))
	t.Cleanup(site.Close)
	reg, err := resolve.NewRegistry([]resolve.Provider{{ID: "sho", Hosts: []string{"sho.rt"}, Tier: "standard"},
		{ID: "alf", Hosts: []string{"alf.test"}, Tier: "premium", Family: "adlinkfly"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(site.URL, "http://")
	r := resolve.New(resolve.Options{Registry: reg, ParkMin: 500 * time.Millisecond,
		Guard: resolve.GuardOptions{HostOverrides: map[string]string{"sho.rt": addr, "alf.test": addr}}})
	t.Cleanup(r.Close)

	hrdb := srv.Client(t)
	hrdb.AddHook(e.hook)
	hrdb.AddHook(recordWrites{e})
	e.store = jobs.NewStore(hrdb, time.Hour)
	e.svc = resolve.NewService(hrdb, r, resolve.ServiceOptions{PollInterval: 20 * time.Millisecond})
	e.h = &jobs.ResolveHandler{Store: e.store, Resolver: e.svc, Logger: slog.New(slog.DiscardHandler), MaxAttempts: 1,
		Leases: jobs.NewLeases(hrdb, jobs.LeaseOptions{TTL: time.Minute})}
	// Round trips are counted in these tests, not times: a job's resolve is "quick" whatever
	// the machine's load, unless a test makes the delay short.
	jobs.SetRunningAfter(e.h, time.Minute)
	// As Worker.Start does: the runs' scripts are known before the first run.
	if err := jobs.LoadScripts(context.Background(), e.rdb); err != nil {
		t.Fatal(err)
	}
	return e
}

// recordWrites notes the status of every job record the handler's compare-and-set writes.
type recordWrites struct{ e *tripEnv }

func (recordWrites) DialHook(next redis.DialHook) redis.DialHook { return next }
func (w recordWrites) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		w.note(cmd)
		return next(ctx, cmd)
	}
}
func (w recordWrites) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			w.note(c)
		}
		return next(ctx, cmds)
	}
}

// note reads the compare-and-set's arguments: evalsha, sha, 2, record key, key record, old
// digest, new record, refund.
func (w recordWrites) note(cmd redis.Cmder) {
	a := cmd.Args()
	if cmd.Name() != "evalsha" || len(a) != 8 || !strings.Contains(fmt.Sprint(a[3]), ":job:") {
		return
	}
	var r jobs.Record
	b, _ := a[6].([]byte)
	if err := json.Unmarshal(b, &r); err != nil {
		return
	}
	w.e.writtenMu.Lock()
	w.e.written = append(w.e.written, r.Status)
	w.e.writtenMu.Unlock()
}

func (e *tripEnv) takeWritten() []jobs.Status {
	e.writtenMu.Lock()
	defer e.writtenMu.Unlock()
	w := e.written
	e.written = nil
	return w
}

// job stores a queued job of link u and returns it with its task; a task without the URL
// when bare.
func (e *tripEnv) job(t *testing.T, u string, bare bool) (jobs.Record, *asynq.Task) {
	t.Helper()
	rec := queuedJob(t, jobs.NewStore(e.rdb, time.Hour), "key_trips")
	if _, err := jobs.NewStore(e.rdb, time.Hour).Update(context.Background(), rec.KeyID, rec.ID, func(r *jobs.Record) error {
		r.URL = u
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rec.URL = u
	inTask := u
	if bare {
		inTask = ""
	}
	task, err := jobs.NewResolveTask(rec.ID, rec.KeyID, inTask, jobs.TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rec, task
}

// run runs task and returns the job as it then stands with the round trips and record writes
// of the run.
func (e *tripEnv) run(t *testing.T, rec jobs.Record, task *asynq.Task) (jobs.Record, int, []string, []jobs.Status, error) {
	t.Helper()
	e.hook.take()
	e.takeWritten()
	perr := e.h.ProcessTask(context.Background(), task)
	n, names := e.hook.take()
	got, err := jobs.NewStore(e.rdb, time.Hour).Get(context.Background(), rec.KeyID, rec.ID)
	if err != nil && !errors.Is(err, jobs.ErrNotFound) {
		t.Fatal(err)
	}
	return got, n, names, e.takeWritten(), perr
}

func (e *tripEnv) locks(t *testing.T) []string {
	t.Helper()
	return e.rdb.Keys(context.Background(), "linkhop:resolve:*:lock").Val()
}

func (e *tripEnv) fetched(key string) int64 {
	n, ok := e.fetches.Load(key)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// TestResolveHandlerRoundTrips: a job whose task carries its link and whose link is resolved
// upstream within the running delay costs the handler two round trips (lease, record, cache
// read and lock; outcome and finished record), is written once (queued → done, never
// running), leaves its outcome in the cache and the lock released; a job of the same link
// then takes the cached outcome without fetching, in the same two round trips.
func TestResolveHandlerRoundTrips(t *testing.T) {
	t.Parallel()
	e := newTripEnv(t, nil)
	rec, task := e.job(t, "http://sho.rt/a", false)
	got, n, names, written, err := e.run(t, rec, task)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != jobs.StatusDone || got.TargetURL == nil || *got.TargetURL != "https://example.com/dest/a" {
		t.Fatalf("job %s, target %v, error %v %v", got.Status, got.TargetURL, ptrStr(got.Error), ptrStr(got.ErrorDetail))
	}
	if n != 2 {
		t.Fatalf("%d round trips %v, want 2", n, names)
	}
	if d := cmp.Diff([]jobs.Status{jobs.StatusDone}, written); d != "" {
		t.Errorf("record writes (-want +got):\n%s", d)
	}
	if keys := e.locks(t); len(keys) != 0 {
		t.Fatalf("locks left behind: %v", keys)
	}
	if cached, found, _, err := e.svc.Lookup(context.Background(), "http://sho.rt/a"); err != nil || !found || cached.TargetURL != *got.TargetURL {
		t.Fatalf("cache: found %v (%v)", found, err)
	}

	rec, task = e.job(t, "http://sho.rt/a", false)
	got, n, names, written, err = e.run(t, rec, task)
	if err != nil || got.Status != jobs.StatusDone || *got.TargetURL != "https://example.com/dest/a" {
		t.Fatalf("second job %s, target %v (%v)", got.Status, got.TargetURL, err)
	}
	if e.fetched("sho.rt/a") != 1 {
		t.Fatalf("the link was fetched %d times, want once (the second job takes the cached outcome)", e.fetched("sho.rt/a"))
	}
	// The lock taken with the cache read is given back once the cache answered.
	if n != 3 || len(written) != 1 {
		t.Errorf("cached: %d round trips %v, want 3 (the lock given back); writes %v", n, names, written)
	}
	if keys := e.locks(t); len(keys) != 0 {
		t.Fatalf("locks left behind after a cached answer: %v", keys)
	}
}

// TestResolveHandlerAfterScriptFlush: when Redis has forgotten its scripts (as after a
// restart), a run's pipelined scripts meet NOSCRIPT (the lease's take, the upstream outcome's
// publication, the record's compare-and-set) and each is run again on its own: the job is
// done, the lease was taken, the outcome is cached and the link's lock released.
func TestResolveHandlerAfterScriptFlush(t *testing.T) {
	t.Parallel()
	e := newTripEnv(t, nil) // its own server: SCRIPT FLUSH must not reach other tests
	ctx := context.Background()
	rec, task := e.job(t, "http://sho.rt/flushed", false)
	if err := e.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	got, _, names, _, err := e.run(t, rec, task)
	if err != nil || got.Status != jobs.StatusDone || got.TargetURL == nil || *got.TargetURL != "https://example.com/dest/flushed" {
		t.Fatalf("job %s, target %v, error %v (round trips %v)", got.Status, got.TargetURL, err, names)
	}
	if n := e.rdb.ZCard(ctx, "linkhop:lease:{leases}:held").Val(); n != 1 {
		t.Errorf("%d leases in the index, want the run's (released, it leaves at the next beat)", n)
	}
	if keys := e.locks(t); len(keys) != 0 {
		t.Errorf("locks left behind: %v", keys)
	}
	if cached, found, _, err := e.svc.Lookup(ctx, "http://sho.rt/flushed"); err != nil || !found || cached.TargetURL != *got.TargetURL {
		t.Errorf("cache: found %v (%v), want the outcome", found, err)
	}
}

// TestResolveHandlerWithoutURL: a task queued before tasks carried their link (no url in its
// payload) is run from the record's link, in one more round trip (the cache read and the
// lock after the record's read).
func TestResolveHandlerWithoutURL(t *testing.T) {
	t.Parallel()
	e := newTripEnv(t, nil)
	rec, task := e.job(t, "http://sho.rt/bare", true)
	if strings.Contains(string(task.Payload()), "url") {
		t.Fatalf("payload %s", task.Payload())
	}
	got, n, names, written, err := e.run(t, rec, task)
	if err != nil || got.Status != jobs.StatusDone || *got.TargetURL != "https://example.com/dest/bare" {
		t.Fatalf("job %s, target %v (%v)", got.Status, got.TargetURL, err)
	}
	if n != 3 {
		t.Errorf("%d round trips %v, want 3", n, names)
	}
	if d := cmp.Diff([]jobs.Status{jobs.StatusDone}, written); d != "" {
		t.Errorf("record writes (-want +got):\n%s", d)
	}
	if keys := e.locks(t); len(keys) != 0 {
		t.Fatalf("locks left behind: %v", keys)
	}

	// A task whose URL is not its record's is run from the record's link.
	rec, task = e.job(t, "http://sho.rt/truth", false)
	other, err := jobs.NewResolveTask(rec.ID, rec.KeyID, "http://sho.rt/other", jobs.TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = task
	got, _, _, _, err = e.run(t, rec, other)
	if err != nil || got.Status != jobs.StatusDone || *got.TargetURL != "https://example.com/dest/truth" || e.fetched("sho.rt/other") != 0 {
		t.Fatalf("job %s, target %v (%v); other fetched %d", got.Status, got.TargetURL, err, e.fetched("sho.rt/other"))
	}
	if keys := e.locks(t); len(keys) != 0 {
		t.Fatalf("locks left behind: %v", keys)
	}
}

// TestResolveHandlerSlowIsRunning: a resolve still going after the running delay shows its
// job running while it runs; the commit then starts from the record that write left (no
// conflict: three round trips in all) and the job is written twice, running then done.
func TestResolveHandlerSlowIsRunning(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	e := newTripEnv(t, gate)
	jobs.SetRunningAfter(e.h, 20*time.Millisecond)
	rec, task := e.job(t, "http://sho.rt/slow", false)
	type out struct {
		rec     jobs.Record
		n       int
		names   []string
		written []jobs.Status
		err     error
	}
	done := make(chan out, 1)
	go func() {
		var o out
		o.rec, o.n, o.names, o.written, o.err = e.run(t, rec, task)
		done <- o
	}()
	waitFor(t, 10*time.Second, "the job shown running while its resolve runs", func() bool {
		r, _ := jobs.NewStore(e.rdb, time.Hour).Get(context.Background(), rec.KeyID, rec.ID)
		return r.Status == jobs.StatusRunning
	})
	close(gate)
	o := <-done
	if o.err != nil || o.rec.Status != jobs.StatusDone || *o.rec.TargetURL != "https://example.com/dest/slow" {
		t.Fatalf("job %s, target %v (%v)", o.rec.Status, o.rec.TargetURL, o.err)
	}
	if d := cmp.Diff([]jobs.Status{jobs.StatusRunning, jobs.StatusDone}, o.written); d != "" {
		t.Errorf("record writes (-want +got):\n%s", d)
	}
	if o.n != 3 {
		t.Errorf("%d round trips %v, want 3 (lease and reads; running; commit)", o.n, o.names)
	}
	if keys := e.locks(t); len(keys) != 0 {
		t.Fatalf("locks left behind: %v", keys)
	}
}

// TestResolveHandlerNothingToDo: the lock taken with the record's read is given back when the
// record says the run has nothing to do (the job missing, finished, or another task's), and
// the link is not fetched.
func TestResolveHandlerNothingToDo(t *testing.T) {
	t.Parallel()
	e := newTripEnv(t, nil)
	set := func(rec jobs.Record, fn func(*jobs.Record)) {
		if _, err := jobs.NewStore(e.rdb, time.Hour).Update(context.Background(), rec.KeyID, rec.ID, func(r *jobs.Record) error {
			fn(r)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Warm up: Redis learns the lock's release script (its first use costs a round trip more).
	warm, warmTask := e.job(t, "http://sho.rt/warm", false)
	_, _, _, _, _ = e.run(t, warm, warmTask)
	_, _, _, _, _ = e.run(t, warm, warmTask) // finished: takes the lock and releases it
	e.fetches.Delete("sho.rt/warm")
	for _, tc := range []struct {
		name  string
		setup func(jobs.Record)
	}{
		{"missing", func(rec jobs.Record) {
			_ = jobs.NewStore(e.rdb, time.Hour).Delete(context.Background(), rec.KeyID, rec.ID)
		}},
		{"finished", func(rec jobs.Record) { set(rec, func(r *jobs.Record) { r.Status = jobs.StatusFailed }) }},
		{"another task's", func(rec jobs.Record) { set(rec, func(r *jobs.Record) { r.Task = rec.ID + "~replacement" }) }},
	} {
		rec, task := e.job(t, "http://sho.rt/idle-"+strings.ReplaceAll(tc.name, " ", "-"), false)
		tc.setup(rec)
		_, n, names, written, _ := e.run(t, rec, task)
		if keys := e.locks(t); len(keys) != 0 {
			t.Errorf("%s: locks left behind: %v", tc.name, keys)
		}
		if len(written) != 0 || n != 2 {
			t.Errorf("%s: %d round trips %v (want the read and the lock's release), writes %v", tc.name, n, names, written)
		}
	}
	e.fetches.Range(func(k, _ any) bool {
		t.Errorf("fetched %v", k)
		return true
	})
}

// TestResolveHandlerResumesParked: a job parked on a provider's countdown reads running while
// parked; its next run takes the link's lock with the record's read and holds it through the
// resumed walk (a job of the same link meanwhile waits for its outcome rather than walking
// the countdown itself), then publishes the outcome and releases the lock with the finished
// record. When another run holds the lock, the walk resumes without it and leaves that
// run's lock alone.
func TestResolveHandlerResumesParked(t *testing.T) {
	t.Parallel()
	e := newTripEnv(t, nil)
	park := func(u string) (jobs.Record, *asynq.Task) {
		t.Helper()
		rec, task := e.job(t, u, false)
		got, _, _, written, err := e.run(t, rec, task)
		if !jobs.IsHeld(err) || got.Resume == nil || got.Status != jobs.StatusRunning {
			t.Fatalf("parked run: %v, job %s resume %v", err, got.Status, got.Resume != nil)
		}
		if d := cmp.Diff([]jobs.Status{jobs.StatusRunning}, written); d != "" {
			t.Errorf("parked writes (-want +got):\n%s", d)
		}
		if keys := e.locks(t); len(keys) != 0 {
			t.Fatalf("a parked job holds the lock: %v", keys)
		}
		return rec, task
	}

	rec, task := park("http://alf.test/one")
	// While the resumed walk runs, its lock stands; a second job of the link waits for it.
	var during atomic.Pointer[[]string]
	spy := func() { l := e.locks(t); during.Store(&l) }
	e.onGo.Store(&spy)
	got, n, names, written, err := e.run(t, rec, task)
	e.onGo.Store(nil)
	if err != nil || got.Status != jobs.StatusDone || *got.TargetURL != "https://example.com/after-countdown" {
		t.Fatalf("resumed job %s, target %v (%v)", got.Status, got.TargetURL, err)
	}
	if l := during.Load(); l == nil || len(*l) != 1 {
		t.Errorf("locks while resuming %v, want the resumed walk's", l)
	}
	if n != 2 || len(written) != 1 {
		t.Errorf("resumed: %d round trips %v, want 2; writes %v", n, names, written)
	}
	if keys := e.locks(t); len(keys) != 0 {
		t.Fatalf("locks left behind: %v", keys)
	}
	if _, found, _, _ := e.svc.Lookup(context.Background(), "http://alf.test/one"); !found {
		t.Error("the resumed outcome is not cached")
	}

	// Another run holds the link's lock: the walk resumes without it and does not release it.
	rec, task = park("http://alf.test/two")
	// The lock's key: take it as a run would, then hand it to "another worker".
	up, err := e.svc.Upstream(context.Background(), "http://alf.test/two")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.rdb.Pipelined(context.Background(), func(p redis.Pipeliner) error { up.LockIn(context.Background(), p); return nil }); err != nil {
		t.Fatal(err)
	}
	keys := e.locks(t)
	if len(keys) != 1 {
		t.Fatalf("locks %v", keys)
	}
	lockKey := keys[0]
	e.rdb.Set(context.Background(), lockKey, "another-worker", time.Minute)
	got, _, _, _, err = e.run(t, rec, task)
	if err != nil || got.Status != jobs.StatusDone {
		t.Fatalf("resumed job %s (%v)", got.Status, err)
	}
	if v := e.rdb.Get(context.Background(), lockKey).Val(); v != "another-worker" {
		t.Errorf("the other run's lock is %q after the resume", v)
	}
}

func ptrStr(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}
