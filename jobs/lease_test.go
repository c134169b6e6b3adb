package jobs_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// leaseTTL is short so that the tests are quick; every bound below is generous, many TTLs.
const leaseTTL = 300 * time.Millisecond

// stubResolver answers every resolve with one target, after gate (when set) is closed.
type stubResolver struct {
	calls   atomic.Int64
	started chan struct{}
	gate    chan struct{}
	target  string
}

func (s *stubResolver) Resolve(ctx context.Context, rawURL string) (resolve.Result, error) {
	s.calls.Add(1)
	if s.started != nil {
		select {
		case s.started <- struct{}{}:
		default:
		}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return resolve.Result{}, ctx.Err()
		}
	}
	return resolve.Result{URL: rawURL, TargetURL: s.target,
		Hops: []resolve.Hop{{URL: rawURL, Kind: resolve.KindStart}, {URL: s.target, Kind: resolve.KindHTTP}}}, nil
}

func (s *stubResolver) Resume(ctx context.Context, rawURL string, _ *resolve.Continuation) (resolve.Result, error) {
	return s.Resolve(ctx, rawURL)
}

// queuedJob stores a queued job of key keyID holding cost credits, as Submit does, without
// queueing its task: the test decides who runs it.
func queuedJob(t *testing.T, store *jobs.Store, keyID string) jobs.Record {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	r := jobs.Record{ID: uuid.NewString(), KeyID: keyID, Status: jobs.StatusQueued, URL: "https://sho.rt/x",
		CreatedAt: now, UpdatedAt: now, Hops: []resolve.Hop{}, CreditsHeld: 1}
	if err := store.Create(context.Background(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeaseStoppedWorkerIsFenced is the SIGSTOP case in one process: worker A takes a job and
// then stops beating (its Leases never start, as if the process were stopped) while its resolve
// waits; worker B's reaper finds the lapsed lease, queues the job again under a replacement
// task, and B finishes it. When A "resumes", its outcome is dropped: the job is finished once,
// charged once, its terminal hook called once; and A's original task, handed back later, ends
// without doing anything.
func TestLeaseStoppedWorkerIsFenced(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdbA, rdbB := srv.Client(t), srv.Client(t)
	store := jobs.NewStore(rdbB, time.Hour)
	var terminals sync.Map
	var terminalCalls atomic.Int64
	onTerminal := func(_ context.Context, r jobs.Record) error {
		terminalCalls.Add(1)
		terminals.Store(r.ID, r.Status)
		return nil
	}

	// Worker B: a real asynq worker with leases and reapers.
	resB := &stubResolver{target: "https://dest.example/b"}
	wB := jobs.NewWorker(rdbB, jobs.WorkerOptions{Concurrency: 4, ShutdownTimeout: time.Second, LeaseTTL: leaseTTL})
	hB := &jobs.ResolveHandler{Store: store, Resolver: resB, Logger: slog.New(slog.DiscardHandler),
		MaxAttempts: 3, OnTerminal: onTerminal, Leases: wB.Leases(), Tasks: jobs.TaskOptions{MaxAttempts: 3, Timeout: 5 * time.Second}}
	wB.Handle(jobs.TypeResolve, hB, nil)
	wB.Leases().OnLapse(jobs.LeaseResolve, hB.Reap)

	// Worker A: leases that never beat, and a resolve that waits until the test lets it go.
	leasesA := jobs.NewLeases(rdbA, jobs.LeaseOptions{TTL: leaseTTL})
	resA := &stubResolver{target: "https://dest.example/a", started: make(chan struct{}, 1), gate: make(chan struct{})}
	hA := &jobs.ResolveHandler{Store: jobs.NewStore(rdbA, time.Hour), Resolver: resA, Logger: slog.New(slog.DiscardHandler),
		MaxAttempts: 3, OnTerminal: onTerminal, Leases: leasesA}

	rec := queuedJob(t, store, "key_fence")
	task, err := jobs.NewResolveTask(rec.ID, rec.KeyID, rec.URL, jobs.TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() { aDone <- hA.ProcessTask(context.Background(), task) }()
	<-resA.started
	// A resolve that goes on past the running delay marks its job running.
	waitFor(t, 5*time.Second, "the job running while A resolves", func() bool {
		r, _ := store.Get(context.Background(), rec.KeyID, rec.ID)
		return r.Status == jobs.StatusRunning
	})

	if err := wB.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wB.Shutdown)
	var done jobs.Record
	waitFor(t, 20*time.Second, "B finishes the job A stopped on", func() bool {
		done, _ = store.Get(context.Background(), rec.KeyID, rec.ID)
		return done.Status.Terminal()
	})
	if done.Status != jobs.StatusDone || *done.TargetURL != "https://dest.example/b" || done.CreditsCharged != 1 ||
		done.Reaps != 1 || done.Task == "" || done.Task == rec.ID {
		t.Fatalf("after the reap: %s target %v charged %d reaps %d task %q", done.Status, *done.TargetURL,
			done.CreditsCharged, done.Reaps, done.Task)
	}

	// A resumes: its resolve returns, and the fence drops its outcome.
	close(resA.gate)
	if err := <-aDone; err != nil {
		t.Fatalf("A's run ended with %v, want nil (nothing to retry)", err)
	}
	after, _ := store.Get(context.Background(), rec.KeyID, rec.ID)
	if *after.TargetURL != "https://dest.example/b" || !after.UpdatedAt.Equal(done.UpdatedAt) {
		t.Errorf("A changed the finished job: target %v", *after.TargetURL)
	}
	// asynq hands A's original task back (its recoverer, a minute later in production).
	if err := hA.ProcessTask(context.Background(), task); err != nil {
		t.Errorf("the original task handed back: %v, want nil", err)
	}
	if n := terminalCalls.Load(); n < 1 || resB.calls.Load() != 1 {
		t.Errorf("terminal hook %d calls, B resolved %d times", n, resB.calls.Load())
	}
	// The job was reaped once: B's own lease never lapsed.
	if r, _ := store.Get(context.Background(), rec.KeyID, rec.ID); r.Reaps != 1 {
		t.Errorf("reaps %d, want 1", r.Reaps)
	}
}

// TestLeaseSlowButAliveIsNotReaped: a run that takes many TTLs keeps its lease while its
// process beats, however many reapers look.
func TestLeaseSlowButAliveIsNotReaped(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// A longer TTL than the other tests': the holder's beat (every TTL/5) must not miss a whole
	// TTL even on a loaded machine running the race detector, where 300 ms was seen to pass.
	const ttl = time.Second
	holder := jobs.NewLeases(srv.Client(t), jobs.LeaseOptions{TTL: ttl})
	reaper := jobs.NewLeases(srv.Client(t), jobs.LeaseOptions{TTL: ttl})
	var reaped atomic.Int64
	reaper.OnLapse(jobs.LeaseResolve, func(context.Context, jobs.LeaseRef) error { reaped.Add(1); return nil })
	holder.Start()
	defer holder.Stop(context.Background())
	l, ctx, err := holder.Take(context.Background(), jobs.LeaseRef{Kind: jobs.LeaseResolve, KeyID: "k", JobID: "slow", Task: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(4 * ttl)
	for time.Now().Before(until) {
		reaper.Beat(context.Background())
		time.Sleep(ttl / 4)
	}
	if reaped.Load() != 0 || l.Lost() || ctx.Err() != nil {
		t.Fatalf("a live holder's lease was reaped (%d) or lost (%v)", reaped.Load(), l.Lost())
	}
	holder.Release(l)
	if ctx.Err() == nil {
		t.Error("the lease's context lives on after Release")
	}
	// A released lease is never reaped, even when its process then dies without beating again.
	time.Sleep(2 * ttl)
	reaper.Beat(context.Background())
	if reaped.Load() != 0 {
		t.Error("a released lease was reaped")
	}
}

// TestLeaseLostWhenStoppedPastTTL: a process that did not beat for longer than the TTL finds
// its lease gone when it beats again (another process reaped it): the run's context ends with
// ErrLeaseLost. Its own reaper claims it when no other process does.
func TestLeaseLostWhenStoppedPastTTL(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ls := jobs.NewLeases(srv.Client(t), jobs.LeaseOptions{TTL: leaseTTL})
	var reaped []jobs.LeaseRef
	ls.OnLapse(jobs.LeaseResolve, func(_ context.Context, ref jobs.LeaseRef) error {
		reaped = append(reaped, ref)
		return nil
	})
	l, ctx, err := ls.Take(context.Background(), jobs.LeaseRef{Kind: jobs.LeaseResolve, KeyID: "k", JobID: "stopped", Task: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * leaseTTL) // "SIGSTOP"
	if n := ls.Beat(context.Background()); n != 1 || len(reaped) != 1 || reaped[0].JobID != "stopped" {
		t.Fatalf("reaped %d %+v, want the stopped run's lease", n, reaped)
	}
	if !l.Lost() || !errors.Is(context.Cause(ctx), jobs.ErrLeaseLost) {
		t.Fatalf("lost %v, cause %v", l.Lost(), context.Cause(ctx))
	}
	if n := ls.Beat(context.Background()); n != 0 {
		t.Errorf("reaped again: %d", n)
	}
}

// TestLeaseReaperRetriesAfterFailure: a reaper that fails leaves the lease claimed; once the
// claim runs out another beat takes it again, so a lapsed lease is never forgotten.
func TestLeaseReaperRetriesAfterFailure(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits out a claim")
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ls := jobs.NewLeases(rdb, jobs.LeaseOptions{TTL: leaseTTL})
	fail := true
	var got atomic.Int64
	ls.OnLapse(jobs.LeaseWebhook, func(context.Context, jobs.LeaseRef) error {
		got.Add(1)
		if fail {
			return errors.New("redis hiccup")
		}
		return nil
	})
	if _, _, err := ls.Take(context.Background(), jobs.LeaseRef{Kind: jobs.LeaseWebhook, KeyID: "k", JobID: "j", Gen: 1, Task: "t"}); err != nil {
		t.Fatal(err)
	}
	ls2 := jobs.NewLeases(rdb, jobs.LeaseOptions{TTL: leaseTTL}) // the holder never beats again
	ls2.OnLapse(jobs.LeaseWebhook, func(ctx context.Context, ref jobs.LeaseRef) error {
		got.Add(1)
		if fail {
			return errors.New("redis hiccup")
		}
		return nil
	})
	waitFor(t, 10*time.Second, "the lapsed lease is claimed", func() bool { ls2.Beat(context.Background()); return got.Load() == 1 })
	fail = false
	waitFor(t, 30*time.Second, "the claim runs out and the lease is reaped", func() bool { return ls2.Beat(context.Background()) == 1 })
	if n, _ := rdb.ZCard(context.Background(), "linkhop:lease:{leases}:reaping").Result(); n != 0 {
		t.Errorf("%d leases still claimed", n)
	}
}

// TestWebhookReapGivesBackInFlightSlot: a delivery attempt whose worker died holds a slot of
// the per-URL cap of attempts in flight; reaping its lease gives the slot back, hands the
// delivery to a replacement task, and a second reap of the same lease queues nothing more.
func TestWebhookReapGivesBackInFlightSlot(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	store := jobs.NewStore(rdb, time.Hour)
	limiter := webhooks.NewRateLimiter(rdb, 100)
	policy := webhooks.Policy{}
	h := jobs.NewWebhookHandler(rdb, jobs.WebhookDeps{Store: store, Limiter: limiter, Policy: policy})
	url := "https://hooks.example/dead"
	now := time.Now().UTC().Truncate(time.Millisecond)
	target := "https://dest.example/x"
	r := jobs.Record{ID: uuid.NewString(), KeyID: "key_hook", Status: jobs.StatusDone, URL: "https://sho.rt/x",
		WebhookURL: url, TargetURL: &target, CreatedAt: now, UpdatedAt: now, CompletedAt: &now,
		Hops: []resolve.Hop{}, Webhook: webhooks.NewState(url, now)}
	if err := store.Create(context.Background(), &r); err != nil {
		t.Fatal(err)
	}
	// The dead attempt: its job lease and its in-flight slot (cap 1).
	dead := jobs.NewLeases(rdb, jobs.LeaseOptions{TTL: leaseTTL})
	orig := "webhook:" + r.ID + ":1"
	jl, _, err := dead.Take(context.Background(), jobs.LeaseRef{Kind: jobs.LeaseWebhook, KeyID: r.KeyID, JobID: r.ID, Gen: 1, Task: orig})
	if err != nil {
		t.Fatal(err)
	}
	if turn, err := limiter.Take(context.Background(), url, jl.Ref().Token, "", 1, time.Hour); err != nil || turn.Wait != 0 {
		t.Fatalf("acquire: %v %v", turn.Wait, err)
	}
	if turn, _ := limiter.Take(context.Background(), url, "second", "", 1, time.Hour); turn.Wait == 0 {
		t.Fatal("the cap of 1 let a second attempt in")
	}

	reaper := jobs.NewLeases(rdb, jobs.LeaseOptions{TTL: leaseTTL})
	reaper.OnLapse(jobs.LeaseWebhook, h.Reap)
	waitFor(t, 10*time.Second, "the dead attempt's lease is reaped", func() bool { return reaper.Beat(context.Background()) == 1 })

	got, _ := store.Get(context.Background(), r.KeyID, r.ID)
	if got.WebhookTask == "" || got.WebhookTask == orig {
		t.Fatalf("webhook task %q after the reap", got.WebhookTask)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(jobs.QueueWebhooks, got.WebhookTask)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("replacement task: %v %v", info, err)
	}
	if turn, err := limiter.Take(context.Background(), url, "third", "", 1, time.Hour); err != nil || turn.Wait != 0 {
		t.Errorf("the dead attempt still holds the in-flight slot (wait %v, %v)", turn.Wait, err)
	}
	// A second reaper of the same lease (it died before forgetting it) changes nothing.
	if err := h.Reap(context.Background(), jl.Ref()); err != nil {
		t.Fatal(err)
	}
	again, _ := store.Get(context.Background(), r.KeyID, r.ID)
	if again.WebhookTask != got.WebhookTask {
		t.Errorf("a second reap moved the delivery to %q", again.WebhookTask)
	}
	if n, _ := rdb.LLen(context.Background(), "asynq:{"+jobs.QueueWebhooks+"}:pending").Result(); n != 1 {
		t.Errorf("%d tasks pending, want the one replacement", n)
	}
}

// TestReapedTooOftenFails: a job whose runs keep dying (a link that crashes its workers) fails
// after maxReaps replacements instead of taking down worker after worker, and its credits go back.
func TestReapedTooOftenFails(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	store := jobs.NewStore(rdb, time.Hour)
	h := &jobs.ResolveHandler{Store: store, Logger: slog.New(slog.DiscardHandler)}
	rec := queuedJob(t, store, "key_poison")
	task := rec.ID
	for i := range 4 {
		ref := jobs.LeaseRef{Kind: jobs.LeaseResolve, KeyID: rec.KeyID, JobID: rec.ID, Task: task, Token: uuid.NewString()[:8] + "0123456789"}
		if err := h.Reap(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
		r, _ := store.Get(context.Background(), rec.KeyID, rec.ID)
		if i < 3 && (r.Status.Terminal() || r.Task == task) {
			t.Fatalf("reap %d: %s, task %q", i+1, r.Status, r.Task)
		}
		task = r.Task
	}
	r, _ := store.Get(context.Background(), rec.KeyID, rec.ID)
	if r.Status != jobs.StatusFailed || r.Error == nil || *r.Error != resolve.CodeResolveFailed || r.CreditsHeld != 0 || r.CreditsCharged != 0 {
		t.Fatalf("after 4 reaps: %s %v held %d charged %d", r.Status, r.Error, r.CreditsHeld, r.CreditsCharged)
	}
}
