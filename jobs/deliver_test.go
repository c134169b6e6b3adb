package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// hookEnv is a real Redis, an API key, and delivery workers, with the webhook tasks of jobs
// it creates queued the way the resolve handler queues them.
type hookEnv struct {
	t       *testing.T
	srv     *redistest.Server
	rdb     *redis.Client
	store   *jobs.Store
	keys    *keys.Store
	key     keys.Created
	policy  webhooks.Policy
	handler *jobs.WebhookHandler // of the first worker
	metrics []*prometheus.Registry
	admits  *admissions
	dones   *doneCounter // asynq's completions of delivery tasks that reached Redis
	runs    atomic.Int64 // runs of delivery tasks, on every worker
	workers []*jobs.Worker
}

// admissions records, from the rate script's replies on the workers' clients, the Redis time
// of every attempt the per-URL limiter admitted: the limiter's exact rule is on these.
type admissions struct {
	mu       sync.Mutex
	at       []int64 // µs, Redis clock
	given    int     // admissions given back
	released int     // in-flight leases given back on their own (Lease.Release, ReleaseAs)
}

func (a *admissions) DialHook(next redis.DialHook) redis.DialHook { return next }
func (a *admissions) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			a.note(c, c.Err()) // the rate check of a first run rides with the reads
		}
		return err
	}
}
func (a *admissions) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		a.note(cmd, err) // cmd.Err() is set only after the hooks
		// An in-flight lease given back on its own, not with its attempt's record (which is a
		// pipeline's).
		if args := cmd.Args(); len(args) == 3 && strings.EqualFold(cmd.Name(), "zrem") && strings.HasSuffix(fmt.Sprint(args[1]), ":inflight") {
			a.mu.Lock()
			a.released++
			a.mu.Unlock()
		}
		return err
	}
}

// note records cmd, which ran with the outcome err: an admission when it is the rate script's
// and admitted, and one taken back when cmd gives it back.
func (a *admissions) note(cmd redis.Cmder, err error) {
	if _, at, ok := webhooks.GivenBackAdmission(cmd, err); ok {
		a.mu.Lock()
		if i := slices.Index(a.at, at); i >= 0 {
			a.at = slices.Delete(a.at, i, i+1)
			a.given++
		}
		a.mu.Unlock()
		return
	}
	args := cmd.Args()
	if err != nil || len(args) < 4 || !strings.HasSuffix(fmt.Sprint(args[3]), ":rate") {
		return
	}
	if c, ok := cmd.(*redis.Cmd); ok {
		// {wait, now, admission − now, placed}: admitted when wait is 0, at its place's time.
		if v, _ := c.Int64Slice(); len(v) == 4 && v[0] == 0 {
			a.mu.Lock()
			a.at = append(a.at, v[1]+v[2])
			a.mu.Unlock()
		}
	}
}

func (a *admissions) releases() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.released
}

func (a *admissions) givenBack() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.given
}

func (a *admissions) sorted() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.at)
	slices.Sort(out)
	return out
}

type hookOptions struct {
	policy  webhooks.Policy
	workers int
	// guard is the address guard of the senders; the zero value is production's, so tests
	// that deliver set Allow to 127.0.0.1/32.
	guard resolve.GuardOptions
	// noLine: held-back attempts take no place in line (as without WebhookDeps.Line).
	noLine bool
	// room: held-back attempts with a place wait for it in their worker (WebhookDeps.Room),
	// with a job lease on each attempt (WebhookDeps.Leases), as in production.
	room bool
	// leaseTTL is the workers' JOB_LEASE_TTL (zero: the default).
	leaseTTL time.Duration
	// redisArgs are extra redis-server arguments (an append-only file, for a restart).
	redisArgs []string
}

var loopback = resolve.GuardOptions{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}

func newHookEnv(t *testing.T, o hookOptions) *hookEnv {
	t.Helper()
	srv := redistest.Start(t, o.redisArgs...)
	e := &hookEnv{t: t, srv: srv, rdb: srv.Client(t), policy: o.policy, admits: &admissions{}, dones: &doneCounter{queue: jobs.QueueWebhooks}}
	e.store = jobs.NewStore(e.rdb, time.Hour)
	e.keys = keys.NewStore(e.rdb)
	var err error
	if e.key, err = e.keys.Create(context.Background(), keys.CreateParams{Name: "hooks"}); err != nil {
		t.Fatal(err)
	}
	for range max(o.workers, 1) {
		e.addWorker(o)
	}
	return e
}

// addWorker starts one more delivery worker on e's Redis and returns it (shut down at the
// test's end; shutting it down earlier is harmless).
func (e *hookEnv) addWorker(o hookOptions) *jobs.Worker {
	t := e.t
	t.Helper()
	// Each worker has its own connection, as separate processes would.
	rdb := e.srv.Client(t)
	rdb.AddHook(e.admits)
	sender := webhooks.NewSender(resolve.NewTransport(o.guard), o.policy)
	t.Cleanup(sender.Client.CloseIdleConnections)
	reg := prometheus.NewRegistry()
	m, err := webhooks.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	w := jobs.NewWorker(rdb, jobs.WorkerOptions{
		Concurrency: 20, ShutdownTimeout: time.Second, Queues: map[string]int{jobs.QueueWebhooks: 1},
		LeaseTTL: o.leaseTTL,
	})
	d := jobs.WebhookDeps{
		Store:   jobs.NewStore(rdb, time.Hour),
		Keys:    keys.NewStore(rdb),
		Limiter: webhooks.NewRateLimiter(rdb, o.policy.Rate()),
		Sender:  sender,
		Policy:  o.policy,
		Metrics: m,
	}
	rdb.AddHook(e.dones) // after the worker's hooks: it sees what they let through
	if !o.noLine {
		d.Line = w.Line()
	}
	if o.room {
		d.Leases, d.Room = w.Leases(), w.Room()
	}
	d.Complete = w.Completions()
	h := jobs.NewWebhookHandler(rdb, d)
	if o.room {
		w.Leases().OnLapse(jobs.LeaseWebhook, h.Reap)
	}
	e.metrics = append(e.metrics, reg)
	if e.handler == nil {
		e.handler = h
	}
	w.Handle(jobs.TypeWebhook, asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		e.runs.Add(1)
		return h.ProcessTask(ctx, task)
	}), jobs.WebhookRetryDelay)
	w.NotFailure(jobs.IsWebhookDeferred)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	e.workers = append(e.workers, w)
	return w
}

// counter sums a webhook counter over the workers' registries.
func (e *hookEnv) counter(name string, label ...string) float64 {
	e.t.Helper()
	sum := 0.0
	for _, reg := range e.metrics {
		mfs, err := reg.Gather()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if len(label) == 2 && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == label[0] && l.GetValue() == label[1]
				}) {
					continue
				}
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// finishedJob stores a done job with a webhook to url (changed by edit, if any) and queues its
// delivery, as the resolve handler does when a job becomes terminal.
func (e *hookEnv) finishedJob(url string, edit ...func(*jobs.Record)) jobs.Record {
	e.t.Helper()
	done := time.Now().UTC().Truncate(time.Millisecond)
	target := "https://example.com/landing?a=1&b=2"
	r := jobs.Record{
		ID: uuid.NewString(), KeyID: e.key.ID, Status: jobs.StatusDone, URL: "https://sho.rt/x",
		WebhookURL: url, TargetURL: &target, Provider: "short", Tier: "standard", CreditsCharged: 1,
		CreatedAt: done, UpdatedAt: done, CompletedAt: &done, Hops: []resolve.Hop{},
		Webhook: webhooks.NewState(url, done),
	}
	for _, f := range edit {
		f(&r)
	}
	if err := e.store.Create(context.Background(), &r); err != nil {
		e.t.Fatal(err)
	}
	if err := e.handler.OnTerminal(context.Background(), r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// finishedJobs is finishedJob n times, and returns the jobs' ids.
func (e *hookEnv) finishedJobs(n int, url string) []string {
	e.t.Helper()
	ids := make([]string, 0, n)
	for range n {
		ids = append(ids, e.finishedJob(url).ID)
	}
	return ids
}

// deliveredOnce waits for the webhooks of jobs ids and fails the test unless each was
// delivered at its first attempt.
func (e *hookEnv) deliveredOnce(ids []string, within time.Duration) {
	e.t.Helper()
	for _, id := range ids {
		if st := e.waitWebhook(id, within); st.Status != webhooks.StatusDelivered || st.Attempts != 1 {
			e.t.Fatalf("job %s: %+v", id, st)
		}
	}
}

// waitWebhook polls the job until its webhook is no longer pending.
func (e *hookEnv) waitWebhook(id string, within time.Duration) webhooks.State {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := e.store.Get(context.Background(), e.key.ID, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if !r.Webhook.Pending() {
			return *r.Webhook
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("webhook of %s still pending after %s: %+v", id, within, *r.Webhook)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hit is one request a receiver got.
type hit struct {
	at     time.Time
	path   string
	header http.Header
	body   []byte
}

// receiver answers each request with the next of codes (the last repeats) and records it.
type receiver struct {
	*httptest.Server
	mu    sync.Mutex
	hits  []hit
	codes []int
	delay time.Duration
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	t.Helper()
	r := &receiver{codes: codes}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		code := r.codes[min(len(r.hits), len(r.codes)-1)]
		r.hits = append(r.hits, hit{at: at, path: req.URL.Path, header: req.Header.Clone(), body: body})
		delay := r.delay
		r.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-req.Context().Done():
			}
		}
		if code == http.StatusFound {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got() []hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.hits)
}

func fastPolicy() webhooks.Policy {
	return webhooks.Policy{BackoffBase: 50 * time.Millisecond, Timeout: 5 * time.Second, MaxRetries: webhooks.DefaultMaxRetries}
}

// The delivery checks, end to end through asynq and real Redis.
func TestWebhookDeliveries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		codes        []int
		policy       webhooks.Policy
		delay        time.Duration
		wantAttempts int
		wantStatus   string
		wantCode     *int
		wantError    string
	}{
		{name: "500, 500, 204", codes: []int{500, 500, 204}, wantAttempts: 3, wantStatus: "delivered", wantCode: ptr(204)},
		{name: "always 500", codes: []int{500}, wantAttempts: 4, wantStatus: "failed", wantCode: ptr(500), wantError: "500"},
		{name: "410 ends at once", codes: []int{410}, wantAttempts: 1, wantStatus: "failed", wantCode: ptr(410), wantError: "410"},
		{name: "302 is not followed", codes: []int{302}, wantAttempts: 4, wantStatus: "failed", wantCode: ptr(302), wantError: "redirects are not followed"},
		{name: "slower than the timeout", codes: []int{204}, delay: 2 * time.Second,
			policy:       webhooks.Policy{BackoffBase: 50 * time.Millisecond, Timeout: 200 * time.Millisecond, MaxRetries: 1},
			wantAttempts: 2, wantStatus: "failed", wantError: "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := tt.policy
			if p == (webhooks.Policy{}) {
				p = fastPolicy()
			}
			e := newHookEnv(t, hookOptions{policy: p, guard: loopback})
			rcv := newReceiver(t, tt.codes...)
			rcv.delay = tt.delay
			job := e.finishedJob(rcv.URL + "/hook")
			st := e.waitWebhook(job.ID, 20*time.Second)
			hits := rcv.got()
			if len(hits) != tt.wantAttempts || st.Attempts != tt.wantAttempts || st.Status != tt.wantStatus {
				t.Fatalf("receiver saw %d requests; state %+v", len(hits), st)
			}
			if (tt.wantCode == nil) != (st.LastStatusCode == nil) || (tt.wantCode != nil && *st.LastStatusCode != *tt.wantCode) {
				t.Errorf("last_status_code %v, want %v", st.LastStatusCode, tt.wantCode)
			}
			if tt.wantError == "" && st.LastError != nil || tt.wantError != "" && (st.LastError == nil || !strings.Contains(*st.LastError, tt.wantError)) {
				t.Errorf("last_error %v, want containing %q", st.LastError, tt.wantError)
			}
			if st.LastAttemptAt == nil || st.NextAttemptAt != nil {
				t.Errorf("last_attempt_at %v next_attempt_at %v", st.LastAttemptAt, st.NextAttemptAt)
			}
			// The task is completed once, each attempt counted once by asynq's counters: the
			// delivered attempt's write completes it (asynq's completion is answered by the
			// worker), a final failure leaves it to asynq.
			ctx := context.Background()
			waitFor(t, 5*time.Second, "the delivery task completed", func() bool {
				n, _ := e.rdb.Get(ctx, "asynq:{webhooks}:processed").Int()
				return n == tt.wantAttempts && e.rdb.LLen(ctx, "asynq:{webhooks}:active").Val() == 0
			})
			if keys := e.rdb.Keys(ctx, "asynq:{webhooks}:t:*").Val(); len(keys) != 0 {
				t.Errorf("delivery tasks left: %v", keys)
			}
			wantSent := 1
			if tt.wantStatus == "delivered" {
				wantSent = 0
			}
			if got := e.dones.count(); got != wantSent {
				t.Errorf("asynq's completions of the delivery sent to Redis: %d, want %d", got, wantSent)
			}
			for _, h := range hits {
				if h.path != "/hook" {
					t.Errorf("request to %s: a redirect was followed", h.path)
				}
				if id := h.header.Get("webhook-id"); id != hits[0].header.Get("webhook-id") || id == "" {
					t.Errorf("webhook-id %q changed across retries (first %q)", id, hits[0].header.Get("webhook-id"))
				}
				if string(h.body) != string(hits[0].body) {
					t.Errorf("body changed across retries")
				}
			}
			// Retries keep their distance: base 50 ms × 4^(n−1) − 20 %, less the few milliseconds
			// an attempt may start before its next_attempt_at (asynq's forwarder keeps seconds).
			for i := 1; i < len(hits) && tt.delay == 0; i++ {
				least := time.Duration(float64(50*time.Millisecond)*0.8)<<(2*(i-1)) - jobs.NotDueSlack
				if gap := hits[i].at.Sub(hits[i-1].at); gap < least {
					t.Errorf("retry %d came %s after the attempt before, want at least %s", i, gap, least)
				}
			}
		})
	}
}

// Both signature schemes verify with the key's secret, and the body is the event of docs/webhooks.md#the-event.
func TestWebhookSignedEvent(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback})
	rcv := newReceiver(t, 204)
	job := e.finishedJob(rcv.URL + "/hook")
	if st := e.waitWebhook(job.ID, 10*time.Second); st.Status != webhooks.StatusDelivered || st.Attempts != 1 {
		t.Fatalf("state %+v", st)
	}
	h := rcv.got()[0]
	secret := e.key.WebhookSecret()
	for _, name := range []string{"Linkhop-Signature", "X-LinkSkipper-Signature"} {
		if err := webhooks.VerifyLinkhop(secret, h.header.Get(name), h.body, time.Now()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := webhooks.VerifyStandard(secret, h.header, h.body, time.Now()); err != nil {
		t.Errorf("standard: %v", err)
	}
	if got, want := h.header.Get("webhook-id"), webhooks.MessageID(job.ID, 1); got != want {
		t.Errorf("webhook-id %q, want %q", got, want)
	}
	if ct, ua := h.header.Get("Content-Type"), h.header.Get("User-Agent"); ct != "application/json" || !strings.HasPrefix(ua, "linkhop-webhooks/") {
		t.Errorf("Content-Type %q, User-Agent %q", ct, ua)
	}
	want := `{"event":"resolve.done","created_at":"` + job.CompletedAt.Format("2006-01-02T15:04:05.000Z") +
		`","job_id":"` + job.ID + `","status":"done","target_url":"https://example.com/landing?a=1&b=2","provider":"short","tier":"standard","error":null,"credits_charged":1,"balance":null}`
	if string(h.body) != want {
		t.Errorf("body\n got %s\nwant %s", h.body, want)
	}
}

// During a rotation's grace both secrets sign; after it only the new one.
func TestWebhookRotation(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback})
	old := e.key.WebhookSecret()
	k, err := e.keys.RotateWebhookSecret(context.Background(), e.key.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rcv := newReceiver(t, 204)
	job := e.finishedJob(rcv.URL)
	e.waitWebhook(job.ID, 10*time.Second)
	h := rcv.got()[0]
	for _, secret := range []string{k.WebhookSecret(), old} {
		if err := webhooks.VerifyLinkhop(secret, h.header.Get("X-LinkSkipper-Signature"), h.body, time.Now()); err != nil {
			t.Errorf("linkhop: %v", err)
		}
		if err := webhooks.VerifyStandard(secret, h.header, h.body, time.Now()); err != nil {
			t.Errorf("standard: %v", err)
		}
	}
	// The Link Skipper SDK reads only the last v1: that is the previous secret's.
	sig := h.header.Get("Linkhop-Signature")
	last := sig[strings.LastIndex(sig, "v1="):]
	ts := strings.TrimPrefix(strings.Split(sig, ",")[0], "t=")
	if err := webhooks.VerifyLinkhop(old, "t="+ts+","+last, h.body, time.Now()); err != nil {
		t.Errorf("last v1 is not the previous secret's: %v", err)
	}
}

// The production address guard refuses the receiver at dial time: nothing arrives and the
// delivery fails with the reason in last_error.
func TestWebhookAddressGuard(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: webhooks.Policy{BackoffBase: 20 * time.Millisecond, MaxRetries: 1}})
	rcv := newReceiver(t, 204)
	job := e.finishedJob(rcv.URL)
	st := e.waitWebhook(job.ID, 10*time.Second)
	if st.Status != webhooks.StatusFailed || st.Attempts != 2 || len(rcv.got()) != 0 || st.LastError == nil {
		t.Fatalf("state %+v, receiver saw %d", st, len(rcv.got()))
	}
	if strings.Contains(*st.LastError, rcv.URL) {
		t.Errorf("last_error carries the URL: %q", *st.LastError)
	}
}

// Two worker processes sending 40 events to one URL never exceed 10 in any 1-second span of
// arrival times, and spend no retry on being held back; 40 events to 4 URLs finish far sooner.
func TestWebhookRateAcrossWorkers(t *testing.T) {
	t.Parallel()
	// One after the other: the blind retries of the second would load the machine, and on
	// a starved machine an attempt may come back too late for its place.
	t.Run("places in line", func(t *testing.T) { testWebhookRate(t, true) })
	t.Run("without a line", func(t *testing.T) { testWebhookRate(t, false) })
}

// testWebhookRate sends 40 events to one URL, then to four, on two workers; with line, the
// held-back attempts take places in line (docs/webhooks.md#rate-per-webhook-url).
func testWebhookRate(t *testing.T, line bool) {
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback, workers: 2, noLine: !line})
	send := func(rcv *receiver, paths []string) time.Duration {
		start := time.Now()
		var ids []string
		for i := range 40 {
			ids = append(ids, e.finishedJob(rcv.URL+paths[i%len(paths)]).ID)
		}
		for _, id := range ids {
			if st := e.waitWebhook(id, 30*time.Second); st.Status != webhooks.StatusDelivered || st.Attempts != 1 {
				t.Fatalf("job %s: %+v", id, st)
			}
		}
		return time.Since(start)
	}

	one := newReceiver(t, 204)
	d1 := send(one, []string{"/only"})
	// The exact rule, on the limiter's own clock: no 11 admissions within the window.
	admitted := e.admits.sorted()
	if len(admitted) != 40 {
		t.Fatalf("%d admissions, want 40", len(admitted))
	}
	window := (time.Second + webhooks.RateGuard).Microseconds()
	for i := 10; i < len(admitted); i++ {
		if gap := admitted[i] - admitted[i-10]; gap < window {
			t.Errorf("admissions %d and %d are %d µs apart (Redis clock): 11 within the window", i-10, i, gap)
		}
	}
	// What the receiver saw: the guard absorbs the usual delay between admission and arrival,
	// but a loaded test machine can delay one request by more than that, so arrivals are
	// held to the second with a tolerance; a limiter that let bursts through would put 11
	// arrivals within a few milliseconds.
	var arrivals []time.Time
	for _, h := range one.got() {
		arrivals = append(arrivals, h.at)
	}
	if len(arrivals) != 40 {
		t.Fatalf("%d arrivals", len(arrivals))
	}
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	const jitter = 250 * time.Millisecond
	for i := 10; i < len(arrivals); i++ {
		if gap := arrivals[i].Sub(arrivals[i-10]); gap < time.Second-jitter {
			t.Errorf("arrivals %d and %d are %s apart: 11 in well under a second", i-10, i, gap)
		} else if gap < time.Second {
			t.Logf("arrivals %d and %d are %s apart: an arrival delayed past the guard (loaded machine)", i-10, i, gap)
		}
	}

	// With places in line, each of the 30 attempts over the limit waits once for its place; a
	// few may start late on a loaded machine and wait again (39 once, in a full parallel run of
	// make test). Without, every waiting attempt asks afresh whenever asynq brings it back:
	// about twice as many holds in runs here.
	if held := e.counter("linkhop_webhook_held_back_total"); line && held > 45 {
		t.Errorf("%v attempts held back for 30 over the limit: places in line should hold each back about once", held)
	}

	four := newReceiver(t, 204)
	d4 := send(four, []string{"/a", "/b", "/c", "/d"})
	heldBack := e.counter("linkhop_webhook_held_back_total")
	t.Logf("40 events: one URL %s, four URLs %s; %v attempts held back", d1, d4, heldBack)
	if heldBack < 30 {
		t.Errorf("only %v attempts held back: the rate did nothing", heldBack)
	}
	if got := e.counter("linkhop_webhook_delivery_attempts_total", "outcome", "delivered"); got != 80 {
		t.Errorf("delivered counter %v, want 80", got)
	}
	// One URL needs at least three full windows; four URLs fit in one. "About 4× sooner",
	// with room for a slow, shared machine.
	if d1 < 3*time.Second || d4*2 > d1 {
		t.Errorf("one URL took %s, four URLs %s", d1, d4)
	}
}

// A duplicate enqueue of the same generation delivers once.
func TestWebhookQueuedOnce(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback})
	rcv := newReceiver(t, 204)
	job := e.finishedJob(rcv.URL)
	if err := e.handler.OnTerminal(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	e.waitWebhook(job.ID, 10*time.Second)
	// A later call (a re-run resolve task) sees the old, pending copy of the record; the
	// stored state is delivered, so the task it may queue does nothing.
	if err := e.handler.OnTerminal(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(rcv.got()); n != 1 {
		t.Fatalf("receiver saw %d deliveries", n)
	}
}

// A failed attempt's retry takes a place in the Line at its time (asynq keeps retry times in
// whole seconds, and would start it up to a second early) and comes back then: two runs for
// two attempts, not one more every pass of asynq's forwarder until the second turns.
func TestWebhookRetryOnTime(t *testing.T) {
	t.Parallel()
	p := fastPolicy()
	p.BackoffBase = 1500 * time.Millisecond
	e := newHookEnv(t, hookOptions{policy: p, guard: loopback})
	rcv := newReceiver(t, 500, 204)
	st := e.waitWebhook(e.finishedJob(rcv.URL+"/retry").ID, 30*time.Second)
	if st.Status != webhooks.StatusDelivered || st.Attempts != 2 {
		t.Fatalf("webhook %+v, want delivered at the second attempt", st)
	}
	// 2, or 3 when a run fails some other way on a loaded machine (a Redis call timing out);
	// without the place, 5-12.
	if runs := e.runs.Load(); runs > 3 {
		t.Errorf("%d task runs for two attempts, want 2", runs)
	}
	hits := rcv.got()
	if len(hits) != 2 {
		t.Fatalf("the receiver got %d requests, want 2", len(hits))
	}
	if gap := hits[1].at.Sub(hits[0].at); gap < 1200*time.Millisecond {
		t.Errorf("the retry came %v after the first attempt, before its backoff (1.5 s ± 20 %%)", gap)
	}
}

// A task that starts before a held-back attempt's time (Held: when it was to ask again or its
// place in line, not a retry's backoff) does not wait for it: the rate and the cap decide,
// and here they let it go at once, in one run.
func TestWebhookHeldTimeNotWaitedFor(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback})
	rcv := newReceiver(t, 204)
	due := time.Now().Add(3 * time.Second).UTC().Truncate(time.Millisecond)
	r := e.finishedJob(rcv.URL+"/held", func(r *jobs.Record) { r.Webhook.NextAttemptAt, r.Webhook.Held = &due, true })
	e.deliveredOnce([]string{r.ID}, 30*time.Second)
	if hits := rcv.got(); len(hits) != 1 || !hits[0].at.Before(due) {
		t.Errorf("%d arrivals, want one before the held-back time %s", len(hits), due.Format(time.StampMilli))
		for _, h := range hits {
			t.Logf("arrived at %s", h.at.Format(time.StampMilli))
		}
	}
	if runs := e.runs.Load(); runs != 1 {
		t.Errorf("%d task runs, want 1", runs)
	}
}

// A retry's time is of its worker's clock, which its run checks it against; its place in the
// Line is on Redis's, moved by the skew of the clocks that the Line reads. Here the Line is
// told that Redis's clock runs a second ahead (on one machine the two agree, so the place is a
// second late in real terms, and asynq's own retry starts the task): without the skew, a
// place on a worker that far behind would start the retry a second early, find it not due and
// go round until the worker's clock caught up.
func TestWebhookRetryOnRedisClock(t *testing.T) {
	t.Parallel()
	p := fastPolicy()
	p.BackoffBase = 1500 * time.Millisecond
	e := newHookEnv(t, hookOptions{policy: p, guard: loopback})
	const skew = time.Second
	jobs.SetClockSkew(e.workers[0].Line(), skew)
	rcv := newReceiver(t, 500, 204)
	id := e.finishedJob(rcv.URL + "/skew").ID
	ctx := context.Background()
	var retryAt time.Time
	deadline := time.Now().Add(10 * time.Second)
	for retryAt.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the first attempt was not recorded")
		}
		time.Sleep(5 * time.Millisecond)
		r, err := e.store.Get(ctx, e.key.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		if w := r.Webhook; w != nil && w.Attempts == 1 && w.NextAttemptAt != nil {
			retryAt = *w.NextAttemptAt
		}
	}
	e.placedAt(retryAt.Add(skew + jobs.LineLead))
	if st := e.waitWebhook(id, 30*time.Second); st.Status != webhooks.StatusDelivered || st.Attempts != 2 {
		t.Fatalf("webhook %+v, want delivered at the second attempt", st)
	}
	if runs := e.runs.Load(); runs > 3 {
		t.Errorf("%d task runs for two attempts, want 2", runs)
	}
}

// The same for a task that starts before its attempt is due: its place is the attempt's time
// on Redis's clock.
func TestWebhookNotDueOnRedisClock(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback})
	const skew = time.Second
	jobs.SetClockSkew(e.workers[0].Line(), skew)
	rcv := newReceiver(t, 204)
	due := time.Now().Add(1500 * time.Millisecond).UTC().Truncate(time.Millisecond)
	e.finishedJob(rcv.URL+"/due", func(r *jobs.Record) { r.Webhook.NextAttemptAt = &due })
	deadline := time.Now().Add(10 * time.Second)
	for e.runs.Load() == 0 || e.rdb.ZCard(context.Background(), jobs.LineKey).Val() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the early run took no place in line")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.placedAt(due.Add(skew + jobs.LineLead))
}

// placedAt checks that the Line holds one place, at time at. The place is written in the
// pipeline of the write that records the attempt, just after it, so it is waited for a moment.
func (e *hookEnv) placedAt(at time.Time) {
	e.t.Helper()
	var places []redis.Z
	for deadline := time.Now().Add(2 * time.Second); len(places) == 0 && time.Now().Before(deadline); {
		var err error
		if places, err = e.rdb.ZRangeWithScores(context.Background(), jobs.LineKey, 0, -1).Result(); err != nil {
			e.t.Fatal(err)
		}
		if len(places) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if len(places) != 1 || int64(places[0].Score) != at.UnixMilli() {
		e.t.Fatalf("places in line %v, want one at %d (the attempt's time, the skew and the lead)", places, at.UnixMilli())
	}
}

// A delivery task that starts before its attempt is due (asynq, which keeps retry times in
// whole seconds, starts a retry up to a second early) takes a place in the Line at the
// attempt's time and comes back then, once, not on every pass of asynq's forwarder.
func TestWebhookNotDueWaitsInLine(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback})
	rcv := newReceiver(t, 204)
	due := time.Now().Add(1500 * time.Millisecond).UTC().Truncate(time.Millisecond)
	r := e.finishedJob(rcv.URL+"/due", func(r *jobs.Record) { r.Webhook.NextAttemptAt = &due })
	e.deliveredOnce([]string{r.ID}, 30*time.Second)
	// 2, or 3 when a run fails some other way on a loaded machine; without the place, 5-10.
	if runs := e.runs.Load(); runs > 3 {
		t.Errorf("%d task runs, want 2 (one early, one at its time)", runs)
	}
	hits := rcv.got()
	if len(hits) != 1 {
		t.Fatalf("%d arrivals, want 1", len(hits))
	}
	if hits[0].at.Before(due) {
		t.Errorf("arrived at %s, before its attempt was due at %s", hits[0].at.Format(time.StampMilli), due.Format(time.StampMilli))
	}
}

func TestRedeliverWebhook(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback})
	q := jobs.NewQueue(e.rdb, e.store, jobs.TaskOptions{Webhooks: fastPolicy()})
	ctx := context.Background()
	rcv := newReceiver(t, 410, 204)
	job := e.finishedJob(rcv.URL)
	if st := e.waitWebhook(job.ID, 10*time.Second); st.Status != webhooks.StatusFailed {
		t.Fatalf("first delivery: %+v", st)
	}

	other, err := e.keys.Create(ctx, keys.CreateParams{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.RedeliverWebhook(ctx, other.ID, job.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("another key's redelivery: %v", err)
	}
	st, err := q.RedeliverWebhook(ctx, e.key.ID, job.ID)
	if err != nil || st.Status != webhooks.StatusPending || st.Attempts != 0 || st.Generation != 2 {
		t.Fatalf("redeliver: %+v, %v", st, err)
	}
	st = e.waitWebhook(job.ID, 10*time.Second)
	hits := rcv.got()
	if st.Status != webhooks.StatusDelivered || st.Attempts != 1 || len(hits) != 2 {
		t.Fatalf("after redelivery: %+v, %d hits", st, len(hits))
	}
	if a, b := hits[0].header.Get("webhook-id"), hits[1].header.Get("webhook-id"); a == b || b != webhooks.MessageID(job.ID, 2) {
		t.Errorf("webhook-ids %q, %q: a redelivery is a new message", a, b)
	}

	// Pending (and not finished) jobs refuse; jobs without a webhook are not found.
	pending := jobs.Record{ID: uuid.NewString(), KeyID: e.key.ID, Status: jobs.StatusRunning, WebhookURL: rcv.URL}
	plain := jobs.Record{ID: uuid.NewString(), KeyID: e.key.ID, Status: jobs.StatusDone}
	for _, r := range []*jobs.Record{&pending, &plain} {
		if err := e.store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.RedeliverWebhook(ctx, e.key.ID, pending.ID); !errors.Is(err, jobs.ErrWebhookPending) {
		t.Errorf("running job: %v", err)
	}
	if _, err := q.RedeliverWebhook(ctx, e.key.ID, plain.ID); !errors.Is(err, jobs.ErrNoWebhook) {
		t.Errorf("job without webhook: %v", err)
	}

	// A pending delivery long overdue has lost its task: it may be replaced, and the new
	// generation delivers.
	lost := time.Now().Add(-time.Hour)
	stale := jobs.Record{ID: uuid.NewString(), KeyID: e.key.ID, Status: jobs.StatusDone, WebhookURL: rcv.URL,
		Webhook: webhooks.NewState(rcv.URL, lost)}
	if err := e.store.Create(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	st, err = q.RedeliverWebhook(ctx, e.key.ID, stale.ID)
	if err != nil || st.Generation != 2 {
		t.Fatalf("overdue delivery: %+v, %v", st, err)
	}
	if st := e.waitWebhook(stale.ID, 10*time.Second); st.Status != webhooks.StatusDelivered {
		t.Errorf("after replacing a lost delivery: %+v", st)
	}
}

func ptr[T any](v T) *T { return &v }

// A receiver that takes its time holds at most Policy.InFlight worker slots at once, across
// workers, however many events wait for it.
func TestWebhookSlowReceiverCappedInFlight(t *testing.T) {
	t.Parallel()
	p := webhooks.Policy{RatePerSecond: 3, BackoffBase: 50 * time.Millisecond, Timeout: 5 * time.Second, MaxRetries: webhooks.DefaultMaxRetries}
	e := newHookEnv(t, hookOptions{policy: p, guard: loopback, workers: 2})
	var mu sync.Mutex
	var now, peak int
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		now++
		peak = max(peak, now)
		mu.Unlock()
		time.Sleep(1500 * time.Millisecond)
		mu.Lock()
		now--
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(slow.Close)
	e.deliveredOnce(e.finishedJobs(8, slow.URL+"/slow"), 60*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if peak > p.InFlight() || peak < 2 {
		t.Errorf("peak attempts in flight %d, want 2..%d", peak, p.InFlight())
	}
}

// TestWebhookRoundTrips: a delivery task that names its URL checks its rate slot in the
// pipeline that reads its job and key, so an attempt is two round trips of the handler's own
// (asynq's dequeue and completion besides): that pipeline and the attempt's record. An
// attempt held back is two as well (the pipeline and the hold's note). A task of an earlier
// version, without the URL, checks after the reads: one more. A stale task gives back the
// slot its early check took, so the URL's log keeps no entry for it, and so does a task whose
// URL is not its record's, which then checks the record's URL.
func TestWebhookRoundTrips(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	rdb := srv.Client(t)
	trips := &tripHook{}
	hrdb := srv.Client(t)
	hrdb.AddHook(trips)
	policy := fastPolicy()
	policy.RatePerSecond = 1
	store := jobs.NewStore(rdb, time.Hour)
	ks := keys.NewStore(rdb)
	key, err := ks.Create(ctx, keys.CreateParams{Name: "trips"})
	if err != nil {
		t.Fatal(err)
	}
	sender := webhooks.NewSender(resolve.NewTransport(loopback), policy)
	t.Cleanup(sender.Client.CloseIdleConnections)
	h := jobs.NewWebhookHandler(hrdb, jobs.WebhookDeps{
		Store: jobs.NewStore(hrdb, time.Hour), Keys: keys.NewStore(hrdb),
		Limiter: webhooks.NewRateLimiter(hrdb, policy.Rate()), Sender: sender, Policy: policy,
	})
	rcv := newReceiver(t, 204)
	job := func(url string) jobs.Record {
		t.Helper()
		done := time.Now().UTC().Truncate(time.Millisecond)
		r := jobs.Record{
			ID: uuid.NewString(), KeyID: key.ID, Status: jobs.StatusDone, URL: "https://sho.rt/x",
			WebhookURL: url, Provider: "short", Tier: "standard", CreatedAt: done, UpdatedAt: done,
			CompletedAt: &done, Hops: []resolve.Hop{}, Webhook: webhooks.NewState(url, done),
		}
		if err := store.Create(ctx, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	run := func(r jobs.Record, url string) (int, []string, error) {
		t.Helper()
		task, err := jobs.NewWebhookTask(r.ID, r.KeyID, url, 1, policy)
		if err != nil {
			t.Fatal(err)
		}
		trips.take()
		err = h.ProcessTask(ctx, task)
		n, names := trips.take()
		return n, names, err
	}
	logged := func() int64 {
		n := int64(0)
		for _, k := range rdb.Keys(ctx, "linkhop:webhook:*:rate").Val() {
			n += rdb.ZCard(ctx, k).Val()
		}
		return n
	}

	// A first delivery teaches Redis the scripts (each NOSCRIPT costs a round trip once).
	if _, _, err := run(job(rcv.URL+"/warm"), rcv.URL+"/warm"); err != nil {
		t.Fatal(err)
	}
	a := job(rcv.URL + "/a")
	if n, names, err := run(a, rcv.URL+"/a"); err != nil || n != 2 {
		t.Fatalf("an attempt: %d round trips %v (%v), want 2", n, names, err)
	}
	if got, err := store.Get(ctx, a.KeyID, a.ID); err != nil || got.Webhook.Status != webhooks.StatusDelivered || got.Webhook.Attempts != 1 {
		t.Fatalf("after the attempt: %+v (%v)", got.Webhook, err)
	}
	// The same URL within the second: held back, in two round trips too.
	b := job(rcv.URL + "/a")
	n, names, err := run(b, rcv.URL+"/a")
	var hb *webhooks.HeldBackError
	if !errors.As(err, &hb) || n != 2 {
		t.Fatalf("an attempt over the rate: %d round trips %v (%v), want 2 and held back", n, names, err)
	}
	// A task without the URL (queued by an earlier version) checks after the reads.
	c := job(rcv.URL + "/c")
	if n, names, err := run(c, ""); err != nil || n != 3 {
		t.Fatalf("an attempt of a task without its URL: %d round trips %v (%v), want 3", n, names, err)
	}
	// A stale task (its delivery is over) gives its early slot back. The first give-back
	// also teaches Redis its script.
	for _, path := range []string{"/d", "/e"} {
		before := logged()
		d := job(rcv.URL + path)
		if _, err := store.Update(ctx, d.KeyID, d.ID, func(r *jobs.Record) error {
			r.Webhook.Status = webhooks.StatusDelivered
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		n, names, err := run(d, rcv.URL+path)
		if err != nil || (path == "/e" && n != 2) {
			t.Fatalf("a stale task: %d round trips %v (%v), want 2 (the reads, the slot given back)", n, names, err)
		}
		if after := logged(); after != before {
			t.Fatalf("rate log entries %d before the stale task, %d after: its slot was not given back", before, after)
		}
	}
	// A task whose URL is not its record's (not met in practice: a generation keeps its URL)
	// gives back the slot taken for the wrong URL and checks the record's: the pipeline, the
	// give-back, the check and the record.
	f := job(rcv.URL + "/f")
	before := logged()
	if n, names, err := run(f, rcv.URL+"/g"); err != nil || n != 4 {
		t.Fatalf("a task naming another URL: %d round trips %v (%v), want 4", n, names, err)
	}
	if after := logged(); after != before+1 {
		t.Fatalf("rate log entries %d before, %d after: want the record URL's admission only", before, after)
	}
	hits := rcv.got()
	if len(hits) != 4 || hits[3].path != "/f" {
		t.Fatalf("the receiver got %d requests, the last to %q; want 4 (warm, a, c, f), the last to /f", len(hits), hits[len(hits)-1].path)
	}
}
