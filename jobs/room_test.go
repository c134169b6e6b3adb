package jobs_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/webhooks"
)

// leaseHeld is the lease index (jobs' leaseHeldKey).
const leaseHeld = "linkhop:lease:{leases}:held"

// oneASecond is fastPolicy at one attempt per second per URL: an attempt held back waits
// a second or more for its place, long enough to be caught waiting.
func oneASecond() webhooks.Policy {
	p := fastPolicy()
	p.RatePerSecond = 1
	return p
}

// spaced fails t unless the sorted admissions keep the limiter's exact rule at rate per second.
func spaced(t *testing.T, admitted []int64, rate int) {
	t.Helper()
	window := (time.Second + webhooks.RateGuard).Microseconds()
	for i := rate; i < len(admitted); i++ {
		if gap := admitted[i] - admitted[i-rate]; gap < window {
			t.Errorf("admissions %d and %d are %d µs apart (Redis clock): %d within the window", i-rate, i, gap, rate+1)
		}
	}
}

// Held-back attempts wait for their places in their worker's Room: each event is one run of
// its task however often the rate held attempts back, whose write that parks the attempt's
// lease completes the task too, the rate holds exactly, and every job lease taken for a
// waiting attempt is given back. Also with a receiver that takes a while to answer, so that
// the burst's first attempts are still in flight, at the cap, while the others ask: the rate
// places those in line all the same.
func TestWebhookHeldWaitInRoom(t *testing.T) {
	t.Parallel()
	for _, answer := range []time.Duration{0, 150 * time.Millisecond} {
		t.Run("receiver answers in "+answer.String(), func(t *testing.T) {
			t.Parallel()
			testWebhookHeldWaitInRoom(t, answer)
		})
	}
}

func testWebhookHeldWaitInRoom(t *testing.T, answer time.Duration) {
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback, workers: 2, room: true})
	rcv := newReceiver(t, 204)
	rcv.delay = answer
	e.deliveredOnce(e.finishedJobs(30, rcv.URL+"/room"), 30*time.Second)
	admitted := e.admits.sorted()
	if len(admitted) != 30 {
		t.Fatalf("%d admissions, want 30", len(admitted))
	}
	spaced(t, admitted, 10)
	held := e.counter("linkhop_webhook_held_back_total")
	if held < 20 {
		t.Errorf("only %v attempts held back for 20 over the limit: the rate did nothing", held)
	}
	if runs := e.runs.Load(); runs != 30 {
		t.Errorf("%d task runs for 30 events (%v holds): a held-back attempt went back through asynq", runs, held)
	}
	if got := len(rcv.got()); got != 30 {
		t.Errorf("the receiver got %d requests, want 30", got)
	}
	// Each run completed its task in its last write: a delivered attempt's record, or a
	// held-back one's parked lease; none of asynq's own completions went to Redis.
	if n := e.dones.count(); n != 0 {
		t.Errorf("%d of asynq's task completions reached Redis, want 0", n)
	}
	waitFor(t, 10*time.Second, "every job lease is given back", func() bool {
		n, err := e.rdb.ZCard(context.Background(), leaseHeld).Result()
		return err == nil && n == 0
	})
}

// A receiver slower than the spacing of places keeps the cap on attempts in flight reached:
// every other group of ten places comes due while the group before is still being sent. Such
// an attempt takes a new place at the end of the line at once and waits for it in the Room,
// rather than going back through asynq to ask again within a second and only then be placed;
// one the cap holds back with nobody in line behind it waits in the Room too, to ask again.
// So each event is one run of its task.
func TestWebhookSlowReceiverPlacedAgain(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback, workers: 2, room: true})
	rcv := newReceiver(t, 204)
	rcv.delay = 1200 * time.Millisecond
	e.deliveredOnce(e.finishedJobs(40, rcv.URL+"/slow"), 60*time.Second)
	admitted := e.admits.sorted()
	spaced(t, admitted, 10)
	if len(admitted) != 40 {
		t.Errorf("%d admissions for 40 events, want 40", len(admitted))
	}
	// No admission is given back. Before, an attempt the cap held back without a place went
	// back through the queue, and its next run, admitted by its early check, found the time
	// its hold wrote not due and gave its slot back (10 such in this test): such an attempt
	// now waits in the Room, and a hold's time is not waited for (Held; the hand-back test
	// checks the mark).
	if n := e.admits.givenBack(); n != 0 {
		t.Errorf("%d admissions given back, want 0", n)
	}
	// 40; 87-108 when an attempt whose place came due at the cap asked again through asynq,
	// and about 50 when one the cap held back without a place did.
	if runs := e.runs.Load(); runs > 44 {
		t.Errorf("%d task runs for 40 events: attempts the cap held back went back through asynq", runs)
	}
}

// A worker that shuts down hands the attempts waiting in its Room back to the queue, each
// under a new task that owns its delivery, and another worker delivers them, once each.
func TestWebhookRoomShutdownHandsBack(t *testing.T) {
	t.Parallel()
	o := hookOptions{policy: oneASecond(), guard: loopback, room: true}
	e := newHookEnv(t, o)
	rcv := newReceiver(t, 204)
	ids := e.finishedJobs(5, rcv.URL+"/slow")
	// The first is sent at once; the others wait in the Room for places about a second apart
	// (the rate places them even while the first is in flight, at the cap), so the third of
	// them waits three seconds or more, longer than the shutdown takes.
	waitFor(t, 10*time.Second, "three attempts waiting in the Room", func() bool {
		return jobs.RoomLen(e.workers[0].Room()) >= 3
	})
	released := e.admits.releases()
	e.workers[0].Shutdown()
	// An attempt waiting in the Room holds no in-flight lease: handing it back gives none back
	// (one round trip each, for nothing, as a reaper's would).
	if n := e.admits.releases() - released; n != 0 {
		t.Errorf("%d in-flight leases given back while the waiting attempts were handed back", n)
	}

	ctx := context.Background()
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	waiting, handedBack := 0, 0
	places := map[string]time.Time{}    // of the attempts handed back: next_attempt_at, their places
	handedOwners := map[string]string{} // their new tasks
	for _, id := range ids {
		r, err := e.store.Get(ctx, e.key.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Webhook.Pending() {
			continue // delivered before the shutdown
		}
		waiting++
		owner := r.WebhookTask
		if owner != "" {
			handedBack++
			handedOwners[id] = owner
			if r.Webhook.NextAttemptAt != nil {
				places[id] = *r.Webhook.NextAttemptAt
				// Its place's time, which the new task need not wait for as for a retry's.
				if !r.Webhook.Held {
					t.Errorf("job %s: next_attempt_at %s of a hold, not marked held", id, r.Webhook.NextAttemptAt)
				}
			}
		} else {
			owner = "webhook:" + id + ":1"
		}
		info, err := inspector.GetTaskInfo(jobs.QueueWebhooks, owner)
		if err != nil || (info.State != asynq.TaskStatePending && info.State != asynq.TaskStateScheduled && info.State != asynq.TaskStateRetry) {
			t.Errorf("job %s: pending, and its task %s is not queued: %v %v", id, owner, info, err)
		}
	}
	if handedBack == 0 {
		t.Fatalf("no attempt was handed back from the Room (%d pending after the shutdown)", waiting)
	}
	if n, err := e.rdb.ZCard(ctx, leaseHeld).Result(); err != nil || n != 0 {
		t.Errorf("%d job leases left after the shutdown (%v)", n, err)
	}

	// Each handed-back attempt's place in line went to its new task, renamed for that task's
	// first run to ask under, at the same time: the new task is sent there, not behind every
	// place still in the line.
	logs, err := e.rdb.Keys(ctx, "linkhop:webhook:*:rate").Result()
	if err != nil || len(logs) != 1 {
		t.Fatalf("rate logs %v (%v), want the one URL's", logs, err)
	}
	for id, owner := range handedOwners {
		at, err := e.rdb.ZScore(ctx, logs[0], owner+"#r0").Result()
		if err != nil {
			t.Errorf("job %s: no place in line under its new task %s (%v)", id, owner, err)
			continue
		}
		if got := time.UnixMicro(int64(at)).UTC().Truncate(time.Millisecond); !got.Equal(places[id]) {
			t.Errorf("job %s: its new task's place is at %s, want the one it waited for, %s", id,
				got.Format(time.StampMilli), places[id].Format(time.StampMilli))
		}
	}

	e.addWorker(o)
	e.deliveredOnce(ids, 30*time.Second)
	if got := len(rcv.got()); got != 5 {
		t.Errorf("the receiver got %d requests, want 5", got)
	}
	spaced(t, e.admits.sorted(), 1)
}

// An attempt waiting in the Room when Redis goes away cannot be made at its place, nor handed
// back; its job lease is then left to lapse, and a reaper queues it again once Redis is back.
func TestWebhookRoomRedisOutage(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: oneASecond(), guard: loopback, room: true, leaseTTL: time.Second,
		redisArgs: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	rcv := newReceiver(t, 204)
	ids := e.finishedJobs(3, rcv.URL+"/outage")
	waitFor(t, 10*time.Second, "two attempts held back", func() bool {
		return e.counter("linkhop_webhook_held_back_total") >= 2
	})
	// Down past the first waiting attempt's place (about a second ahead).
	if err := e.srv.Restart(2500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st := e.waitWebhook(id, 60*time.Second); st.Status != webhooks.StatusDelivered {
			t.Fatalf("job %s: %+v", id, st)
		}
	}
	seen := map[string]bool{}
	for _, h := range rcv.got() {
		seen[h.header.Get("webhook-id")] = true
	}
	if len(seen) != 3 {
		t.Errorf("the receiver saw %d events, want 3", len(seen))
	}
	spaced(t, e.admits.sorted(), 1)
}

// An attempt whose place is more than a minute ahead does not wait in the Room, which it would
// hold all that time: its task waits in asynq's retry set, and the Line brings it back.
func TestWebhookRoomHorizon(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: oneASecond(), guard: loopback, room: true})
	start := time.Now()
	rcv := newReceiver(t, 204)
	e.finishedJobs(64, rcv.URL+"/far")
	ctx := context.Background()
	const line = "linkhop:{" + jobs.QueueWebhooks + "}:line"
	waitFor(t, 30*time.Second, "the places past a minute taken in the Line", func() bool {
		n, err := e.rdb.ZCard(ctx, line).Result()
		return err == nil && n >= 2
	})
	far, err := e.rdb.ZRangeWithScores(ctx, line, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range far {
		if at := time.UnixMilli(int64(z.Score)); at.Sub(start) < time.Minute {
			t.Errorf("task %v has a place %s after the start in the Line: it should wait in the Room", z.Member, at.Sub(start))
		}
	}
	// Places are 1.05 s apart: about 57 fall within the minute.
	room := e.workers[0].Room()
	waitFor(t, 30*time.Second, "the places within a minute waiting in the Room", func() bool { return jobs.RoomLen(room) >= 50 })
	if n := jobs.RoomLen(room); n > 62 {
		t.Errorf("%d attempts wait in the Room, want only those of the places within a minute (about 57)", n)
	}
}

// A shutdown lets an attempt being made from the Room finish for SHUTDOWN_TIMEOUT, then cuts it
// short and hands it back: it was no attempt (the receiver never answered), and another worker
// makes it.
func TestWebhookRoomShutdownCutsShort(t *testing.T) {
	t.Parallel()
	o := hookOptions{policy: oneASecond(), guard: loopback, room: true}
	e := newHookEnv(t, o)
	var hits atomic.Int64
	release := make(chan struct{})
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 2 {
			select { // the second request hangs until the test ends
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)
	t.Cleanup(func() { close(release) })
	// The first is delivered before the second is queued, so the second is held back by the
	// rate alone, for a place about a second ahead, in the Room, not by the cap in flight.
	ids := e.finishedJobs(1, rcv.URL+"/hang")
	e.deliveredOnce(ids, 10*time.Second)
	ids = append(ids, e.finishedJob(rcv.URL+"/hang").ID)
	room := e.workers[0].Room()
	waitFor(t, 10*time.Second, "the second attempt sent from the Room", func() bool {
		return hits.Load() >= 2 && jobs.RoomLen(room) == 1
	})
	began := time.Now()
	e.workers[0].Shutdown() // SHUTDOWN_TIMEOUT 1 s
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the shutdown took %s with an attempt hanging: the Room did not cut it short", took)
	}
	r, err := e.store.Get(context.Background(), e.key.ID, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if !r.Webhook.Pending() || r.Webhook.Attempts != 0 || r.WebhookTask == "" {
		t.Fatalf("after the shutdown: task %q, %+v; want pending, no attempt counted, a new task", r.WebhookTask, *r.Webhook)
	}
	e.addWorker(o)
	e.deliveredOnce(ids, 30*time.Second)
}

// A waiting attempt's job lease is parked until its place, not renewed every beat: with a
// JOB_LEASE_TTL shorter than the waits, no lease lapses and no reaper replaces a task while
// its attempt waits in a live worker.
func TestWebhookRoomParksLeases(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: oneASecond(), guard: loopback, room: true, leaseTTL: 500 * time.Millisecond})
	rcv := newReceiver(t, 204)
	ids := e.finishedJobs(1, rcv.URL+"/parked")
	e.deliveredOnce(ids, 10*time.Second)
	// Held back by the rate alone: places about 1, 2 and 3 seconds ahead, all past the TTL.
	ids = append(ids, e.finishedJobs(3, rcv.URL+"/parked")...)
	waitFor(t, 10*time.Second, "three attempts waiting in the Room", func() bool { return jobs.RoomLen(e.workers[0].Room()) == 3 })
	n, err := e.rdb.ZCount(context.Background(), leaseHeld, "-inf",
		strconv.FormatInt(time.Now().Add(1500*time.Millisecond).UnixMilli(), 10)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n > 1 {
		t.Errorf("%d leases expire within 1.5 s while their attempts wait for places 1–3 s ahead", n)
	}
	e.deliveredOnce(ids, 30*time.Second)
	for _, id := range ids {
		if r, err := e.store.Get(context.Background(), e.key.ID, id); err != nil || r.WebhookTask != "" {
			t.Errorf("job %s: delivery task %q (%v): replaced by a reaper while it waited", id, r.WebhookTask, err)
		}
	}
	if runs := e.runs.Load(); runs != 4 {
		t.Errorf("%d task runs for 4 events", runs)
	}
}

// A task that starts before its held-back attempt's time and finds, in its early rate check,
// a place in line kept for it at that time (a handed-back attempt's, renamed for it) waits for
// that place in the Room: one run of the task, where giving the place back as not due would
// take a second run and lose the place.
func TestWebhookNotDueKeepsItsPlace(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t, hookOptions{policy: fastPolicy(), guard: loopback, room: true})
	rcv := newReceiver(t, 204)
	url := rcv.URL + "/kept"
	ctx := context.Background()
	// The URL's rate spent for the next second, and then a place kept under the name the
	// task's first run asks for.
	lim := webhooks.NewRateLimiter(e.rdb, fastPolicy().Rate())
	for i := range fastPolicy().Rate() {
		if turn, err := lim.Take(ctx, url, "fill-"+strconv.Itoa(i), "", 0, 0); err != nil || turn.Wait != 0 {
			t.Fatalf("filling the rate: %+v, %v", turn, err)
		}
	}
	id := uuid.NewString()
	turn, err := lim.Take(ctx, url, "kept", "webhook:"+id+":1#r0", 0, 0)
	if err != nil || !turn.Placed {
		t.Fatalf("the kept place: %+v, %v", turn, err)
	}
	due := turn.At.UTC().Truncate(time.Millisecond)
	e.finishedJob(url, func(r *jobs.Record) {
		r.ID = id
		r.Webhook.NextAttemptAt, r.Webhook.Held = &due, true // as its hold wrote it
	})
	e.deliveredOnce([]string{id}, 30*time.Second)
	if runs := e.runs.Load(); runs != 1 {
		t.Errorf("%d task runs, want 1 (held for its place in the Room)", runs)
	}
	hits := rcv.got()
	if len(hits) != 1 {
		t.Fatalf("%d arrivals, want 1", len(hits))
	}
	if early := due.Sub(hits[0].at); early > webhooks.RateGuard {
		t.Errorf("arrived %v before its place", early)
	}
}
