//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/webhooks"
)

// The webhook policy the tests run with: short, so that four attempts take seconds.
const (
	hookBase    = 400 * time.Millisecond // WEBHOOK_BACKOFF_BASE
	hookTimeout = time.Second            // WEBHOOK_TIMEOUT
	hookRetries = 3                      // WEBHOOK_MAX_RETRIES
	hookRate    = 5                      // WEBHOOK_RATE_PER_SECOND
	// hookLate is how late an attempt may come after its due time: asynq moves due retries
	// to the queue every DelayedTaskCheckInterval (100 ms in jobs.NewWorker), asynq keeps
	// retry times in whole seconds (the handler then waits out the rest), plus the attempt's
	// own work and a loaded machine.
	hookLate = 1500 * time.Millisecond
)

func hookEnv() []string {
	return []string{
		"LINKHOP_ALLOW_PRIVATE_TARGETS=true", // plain-http receivers on loopback
		"WEBHOOK_BACKOFF_BASE=" + hookBase.String(),
		"WEBHOOK_TIMEOUT=" + hookTimeout.String(),
		fmt.Sprintf("WEBHOOK_MAX_RETRIES=%d", hookRetries),
		fmt.Sprintf("WEBHOOK_RATE_PER_SECOND=%d", hookRate),
	}
}

// arrival is one delivery attempt as a receiver saw it.
type arrival struct {
	at    time.Time
	id    string // webhook-id
	jobID string
	sig   bool // both signature headers present
}

// receiver is a webhook endpoint in the test process; respond decides each answer (n counts
// this receiver's arrivals from 1).
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []arrival
	respond func(n int, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{respond: respond}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	rc.srv.Start()
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev struct {
		JobID string `json:"job_id"`
	}
	_ = json.Unmarshal(body, &ev)
	rc.mu.Lock()
	rc.got = append(rc.got, arrival{at: time.Now(), id: r.Header.Get("webhook-id"), jobID: ev.JobID,
		sig: r.Header.Get("Linkhop-Signature") != "" && r.Header.Get("webhook-signature") != ""})
	n := len(rc.got)
	rc.mu.Unlock()
	if rc.respond == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	rc.respond(n, w, r)
}

func (rc *receiver) arrivals() []arrival {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]arrival(nil), rc.got...)
}

func (rc *receiver) url(path string) string { return rc.srv.URL + path }

// hookStack is a stack with private webhook targets allowed, an API, workers and a key.
type hookStack struct {
	*stack
	api   *proc
	token string
	keyID string
}

func newHookStack(t *testing.T, workers int) *hookStack {
	s := newStack(t, nil, hookEnv()...)
	h := &hookStack{stack: s, api: s.startAPI()}
	for i := range workers {
		s.startWorker(fmt.Sprintf("worker-%d", i+1))
	}
	h.token, h.keyID = s.newKey("--rate-limit", "0")
	return h
}

// submit posts a resolve of a fresh link with webhook hook and returns the job id.
func (h *hookStack) submit(path, hook string) string {
	h.t.Helper()
	a := call(context.Background(), h.api.addr, "POST", "/v1/resolve", h.token,
		map[string]string{"url": "http://bit.ly/" + path, "webhook_url": hook})
	if a.status != http.StatusAccepted {
		h.t.Fatalf("submit %s: %d %s %v", path, a.status, a.raw, a.err)
	}
	return a.body["job_id"].(string)
}

// hookState waits until job id's webhook is no longer pending (or d passes) and returns the
// record.
func (h *hookStack) hookState(id string, d time.Duration) jobs.Record {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, err := h.store.Get(context.Background(), h.keyID, id)
		if err == nil && r.Webhook != nil && r.Webhook.Status != webhooks.StatusPending {
			return r
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("webhook of job %s still pending after %v: %+v (%v)", id, d, r.Webhook, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantGaps checks the times between attempts against the policy: retry n comes
// hookBase×4^(n−1) (±20 %) after the previous attempt ended, and at most hookLate later.
func wantGaps(t *testing.T, got []arrival, attemptTook time.Duration) {
	t.Helper()
	for i := 1; i < len(got); i++ {
		d := hookBase << (2 * (i - 1))
		gap := got[i].at.Sub(got[i-1].at)
		lo, hi := d*8/10-50*time.Millisecond, d*12/10+attemptTook+hookLate
		if gap < lo || gap > hi {
			t.Errorf("attempt %d came %v after attempt %d; the policy says %v ±20%% (allowed %v..%v)",
				i+1, gap.Round(time.Millisecond), i, d, lo, hi)
		}
	}
}

// noTaskLeft fails if generation gen of job id's delivery still has a task in any state: a
// delivery that ended must not come back later.
func (h *hookStack) noTaskLeft(id string, gen int) {
	h.t.Helper()
	insp := asynq.NewInspectorFromRedisClient(h.rdb)
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := insp.GetTaskInfo(jobs.QueueWebhooks, fmt.Sprintf("webhook:%s:%d", id, gen))
		if err != nil {
			return // deleted: nothing more will be sent
		}
		if time.Now().After(deadline) {
			h.t.Errorf("the ended delivery still has a task: %v, retried %d", info.State, info.Retried)
			return
		}
		time.Sleep(50 * time.Millisecond) // the last run may still be finishing
	}
}

func sameID(t *testing.T, got []arrival) {
	t.Helper()
	for _, a := range got {
		if a.id == "" || a.id != got[0].id || !a.sig {
			t.Errorf("attempts of one delivery: webhook-id %q vs %q, signed %v", a.id, got[0].id, a.sig)
		}
	}
}

// TestWebhookReceiverDownForAWhile: the receiver refuses connections for the first two
// attempts and then comes up: the third attempt, at the policy's time, delivers.
func TestWebhookReceiverDownForAWhile(t *testing.T) {
	t.Parallel()
	h := newHookStack(t, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // down: connections are refused
	id := h.submit("down", "http://"+addr+"/hook")

	deadline := time.Now().Add(30 * time.Second)
	for {
		r, _ := h.store.Get(context.Background(), h.keyID, id)
		if r.Webhook != nil && r.Webhook.Attempts >= 2 {
			if r.Webhook.Attempts > 2 || r.Webhook.Status != webhooks.StatusPending {
				t.Fatalf("webhook before the receiver came up: %+v", r.Webhook)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two attempts did not happen: %+v", r.Webhook)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Up again, on the same address.
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{}
	rc.srv = &httptest.Server{Listener: l2, Config: &http.Server{Handler: http.HandlerFunc(rc.serve)}}
	rc.srv.Start()
	defer rc.srv.Close()

	r := h.hookState(id, 30*time.Second)
	got := rc.arrivals()
	if r.Webhook.Status != webhooks.StatusDelivered || r.Webhook.Attempts != 3 || len(got) != 1 {
		t.Fatalf("webhook %+v after %d arrivals, want delivered on attempt 3", r.Webhook, len(got))
	}
	// Attempt 3 came base + 4×base (±20 %) after the first.
	first, d := *r.CompletedAt, hookBase+4*hookBase
	if gap := got[0].at.Sub(first); gap < d*8/10-100*time.Millisecond || gap > d*12/10+2*hookLate {
		t.Errorf("attempt 3 came %v after the job finished, want about %v", gap, d)
	}
	sameID(t, got)
}

// TestWebhookFailingReceiver: a receiver that always answers 500 gets exactly
// 1 + WEBHOOK_MAX_RETRIES attempts, spaced as the policy says, and then none; the job shows
// failed. A redelivery is a new message that starts over.
func TestWebhookFailingReceiver(t *testing.T) {
	t.Parallel()
	h := newHookStack(t, 1)
	up := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-up:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	id := h.submit("failing", rc.url("/hook"))
	r := h.hookState(id, 40*time.Second)
	h.noTaskLeft(id, 1)
	got := rc.arrivals()
	if len(got) != 1+hookRetries || r.Webhook.Status != webhooks.StatusFailed || r.Webhook.Attempts != 1+hookRetries {
		t.Fatalf("%d arrivals, webhook %+v; want %d attempts and failed", len(got), r.Webhook, 1+hookRetries)
	}
	if r.Webhook.NextAttemptAt != nil || r.Webhook.LastStatusCode == nil || *r.Webhook.LastStatusCode != 500 {
		t.Errorf("failed webhook shows next %v, last status %v", r.Webhook.NextAttemptAt, r.Webhook.LastStatusCode)
	}
	wantGaps(t, got, 0)
	sameID(t, got)

	close(up)
	a := call(context.Background(), h.api.addr, "POST", "/v1/jobs/"+id+"/webhook/redeliver", h.token, nil)
	if a.status != http.StatusAccepted {
		t.Fatalf("redeliver: %d %s", a.status, a.raw)
	}
	r = h.hookState(id, 20*time.Second)
	all := rc.arrivals()
	if r.Webhook.Status != webhooks.StatusDelivered || len(all) != len(got)+1 || all[len(all)-1].id == got[0].id {
		t.Errorf("after redelivery: webhook %+v, %d arrivals, ids %q then %q", r.Webhook, len(all), got[0].id, all[len(all)-1].id)
	}
}

// TestWebhookSlowReceiver: an answer later than WEBHOOK_TIMEOUT is a failed attempt (the
// request is cut off, not waited for); the retry comes per policy and one within the
// timeout delivers.
func TestWebhookSlowReceiver(t *testing.T) {
	t.Parallel()
	h := newHookStack(t, 1)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select { // far past the timeout; the sender must have given up
			case <-r.Context().Done():
			case <-time.After(5 * hookTimeout):
			}
			return
		}
		time.Sleep(hookTimeout / 2) // slow, but in time
		w.WriteHeader(http.StatusAccepted)
	})
	id := h.submit("slow", rc.url("/hook"))
	r := h.hookState(id, 30*time.Second)
	got := rc.arrivals()
	if r.Webhook.Status != webhooks.StatusDelivered || r.Webhook.Attempts != 2 || len(got) != 2 {
		t.Fatalf("webhook %+v after %d arrivals; want delivered on attempt 2", r.Webhook, len(got))
	}
	// The first attempt ended at the timeout; the retry came hookBase (±20 %) after that.
	wantGaps(t, got, hookTimeout)
	if gap := got[1].at.Sub(got[0].at); gap < hookTimeout {
		t.Errorf("retry %v after a timed-out attempt: the timeout was not applied", gap)
	}
	sameID(t, got)
}

// TestWebhookGone: 410 Gone ends the delivery at once: one attempt, failed, no retry.
func TestWebhookGone(t *testing.T) {
	t.Parallel()
	h := newHookStack(t, 1)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) })
	id := h.submit("gone", rc.url("/hook"))
	r := h.hookState(id, 20*time.Second)
	h.noTaskLeft(id, 1)
	if got := rc.arrivals(); len(got) != 1 || r.Webhook.Status != webhooks.StatusFailed || r.Webhook.Attempts != 1 {
		t.Fatalf("%d arrivals, webhook %+v; want exactly one attempt and failed", len(got), r.Webhook)
	}
}

// TestWebhookRedirect: a 3xx is a failed attempt, never followed: the redirect's target
// sees nothing and the delivery is retried per policy until it fails.
func TestWebhookRedirect(t *testing.T) {
	t.Parallel()
	h := newHookStack(t, 1)
	target := newReceiver(t, nil)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.url("/elsewhere"), http.StatusTemporaryRedirect)
	})
	id := h.submit("redirect", rc.url("/hook"))
	r := h.hookState(id, 40*time.Second)
	got := rc.arrivals()
	if len(got) != 1+hookRetries || r.Webhook.Status != webhooks.StatusFailed {
		t.Fatalf("%d arrivals, webhook %+v; want %d attempts and failed", len(got), r.Webhook, 1+hookRetries)
	}
	if n := len(target.arrivals()); n != 0 {
		t.Errorf("the redirect was followed: its target got %d requests", n)
	}
	if r.Webhook.LastStatusCode == nil || *r.Webhook.LastStatusCode != http.StatusTemporaryRedirect {
		t.Errorf("last status %v, want 307", r.Webhook.LastStatusCode)
	}
	wantGaps(t, got, 0)
}

// TestWebhookRatePerHook: many jobs finishing together, on two worker processes, to one
// webhook URL: no 1-second span ever sees more than WEBHOOK_RATE_PER_SECOND attempts there;
// held-back attempts are delayed, not failed (every delivery succeeds on its first attempt);
// another URL is not slowed by the busy one.
func TestWebhookRatePerHook(t *testing.T) {
	t.Parallel()
	const jobsPerHook = 30
	h := newHookStack(t, 2)
	rc := newReceiver(t, nil)
	busy, other := rc.url("/busy"), rc.url("/other")
	var ids []string
	for i := range jobsPerHook {
		ids = append(ids, h.submit(fmt.Sprintf("rate-busy-%d", i), busy))
	}
	otherID := h.submit("rate-other", other)
	start := time.Now()
	for _, id := range append(ids, otherID) {
		r := h.hookState(id, 60*time.Second)
		if r.Webhook.Status != webhooks.StatusDelivered || r.Webhook.Attempts != 1 {
			t.Errorf("job %s: webhook %+v, want delivered on the first attempt", id, r.Webhook)
		}
	}
	t.Logf("%d deliveries to one URL took %v", jobsPerHook, time.Since(start).Round(100*time.Millisecond))

	var times []time.Time
	var otherAt time.Time
	seen := map[string]int{}
	for _, a := range rc.arrivals() {
		seen[a.jobID]++
		if a.jobID == otherID {
			otherAt = a.at
			continue
		}
		times = append(times, a.at)
	}
	if len(times) != jobsPerHook {
		t.Fatalf("%d arrivals at the busy URL, want %d", len(times), jobsPerHook)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("job %s delivered %d times", id, n)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	worst := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < time.Second; j++ {
			n++
		}
		worst = max(worst, n)
	}
	t.Logf("most attempts in any 1 s at the busy URL: %d (limit %d)", worst, hookRate)
	if worst > hookRate {
		t.Errorf("%d attempts within one second at one URL; WEBHOOK_RATE_PER_SECOND is %d", worst, hookRate)
	}
	if least := time.Duration(jobsPerHook/hookRate-1) * time.Second; times[len(times)-1].Sub(times[0]) < least {
		t.Errorf("%d attempts spread over only %v", jobsPerHook, times[len(times)-1].Sub(times[0]))
	}
	if otherAt.IsZero() || otherAt.Sub(times[0]) > 3*time.Second {
		t.Errorf("the other URL's delivery came %v after the busy URL's first: held back by another URL's rate", otherAt.Sub(times[0]))
	}
}
