//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/webhooks"
)

// A failover loses what the dead primary had acknowledged but not yet sent to the replica
// that takes over: Redis replication is asynchronous. On loopback a replica is microseconds
// behind, so the tests make it realistically late first: the replica is stopped (SIGSTOP)
// and the primary is given 16 MB to replicate, more than the kernel's socket buffers hold,
// so what the primary acknowledges next waits in its own memory; the primary is then killed
// (SIGKILL) and the replica resumed. That is a replica a moment behind at the moment its
// primary dies: a network hiccup, a slow disk, a busy replica. The stop is shorter than the
// failure detection time, so the replica is still the one promoted.

// Failure detection: short, so that a test takes seconds (production defaults are 30 s for
// Sentinel, 15 s for Cluster).
const (
	sentinelDownAfter  = time.Second
	clusterNodeTimeout = 1000 // ms
	laggedFor          = 600 * time.Millisecond
	failoverLimit      = 30 // rate_limit_per_minute of the limit key
)

// failoverEnv is hookEnv with a per-URL rate that the load's webhooks (all to one URL)
// never wait on: a backlog there would hide what the failover did to them.
func failoverEnv() []string { return append(hookEnv(), "WEBHOOK_RATE_PER_SECOND=1000") }

// failoverReport is what one run measured, for the log and docs/reliability.md.
type failoverReport struct {
	accepted, lost, late, unavailable  int
	window503                          time.Duration // first to last 503 answered around the kill
	firstAccepted                      time.Duration // kill → first 202 of a request sent after the kill
	readyAgain                         time.Duration // kill → both /readyz 200 again
	limitAccepted, limitJobs           int
	hooks, hooksDelivered, hooksFailed int
	hooksLate, hooksLost               int
}

func (r failoverReport) String() string {
	return fmt.Sprintf("accepted %d: lost %d, late %d (left to asynq's recovery); 503s %d over %v; first 202 after the kill %v, both /readyz 200 after %v; "+
		"limit key %d accepted, %d jobs (limit %d); webhooks %d: %d delivered, %d failed, %d late, %d lost",
		r.accepted, r.lost, r.late, r.unavailable, r.window503.Round(10*time.Millisecond), r.firstAccepted.Round(10*time.Millisecond),
		r.readyAgain.Round(10*time.Millisecond), r.limitAccepted, r.limitJobs, failoverLimit, r.hooks, r.hooksDelivered, r.hooksFailed, r.hooksLate, r.hooksLost)
}

// failoverCase is one topology: how to make its doomed primary's replica lag, kill it, and
// tell that the topology has recovered.
type failoverCase struct {
	// lagAndKill makes the replica of the primary that owns keyTag lag, then kills that
	// primary and resumes the replica; it returns the kill's time.
	lagAndKill func(t *testing.T, keyTag string) time.Time
	// writable reports whether the test's own client can write keyTag's slot again.
	writable func(keyTag string) bool
	// restart starts the killed primary again, as an operator (or Kubernetes) would: it
	// comes back as a replica of the promoted one.
	restart func(t *testing.T)
	// diag describes the topology, for a failure message.
	diag func() string
}

// runFailover runs linkhop (an api and a worker, webhooks on) on s under steady load, with a
// second key at its per-minute limit, and lets c kill a primary. It checks what must hold
// whatever REDIS_MIN_REPLICAS_ACK is and returns the figures; the caller checks the rest.
func runFailover(t *testing.T, s *stack, c failoverCase) failoverReport {
	began := time.Now()
	hook := newReceiver(t, nil)
	api := s.startAPI()
	w := s.startWorker("worker")
	token, keyID := s.newKey("--rate-limit", "0")
	limTok, limID := s.newKey("--rate-limit", strconv.Itoa(failoverLimit))

	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	apiReady, workerReady := watchReady(watchCtx, api.addr), watchReady(watchCtx, w.addr)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	wait := resolveLoad(loadCtx, func() string { return api.addr }, token, "load", hook.url("/hook"), 4)
	time.Sleep(2 * time.Second)

	// The limit key: about 20 requests a second from a second before the lag, so its window
	// fills around the failover. The whole run stays well under a minute, so at most
	// failoverLimit may ever be accepted.
	var (
		limMu       sync.Mutex
		limAccepted []string
		limWG       sync.WaitGroup
	)
	for g := range 2 {
		limWG.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				a := call(context.Background(), api.addr, "POST", "/v1/resolve", limTok,
					map[string]string{"url": fmt.Sprintf("http://bit.ly/limit-%d-%d", g, i)})
				if a.status == http.StatusAccepted {
					limMu.Lock()
					limAccepted = append(limAccepted, a.body["job_id"].(string))
					limMu.Unlock()
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	time.Sleep(time.Second)

	killedAt := c.lagAndKill(t, "{k:"+keyID+"}")
	t.Logf("phase: killed %v after the processes' start", killedAt.Sub(began).Round(100*time.Millisecond))
	deadline := time.Now().Add(45 * time.Second)
	for !c.writable("{k:" + keyID + "}") {
		if time.Now().After(deadline) {
			t.Fatalf("the topology did not recover within 45s of the kill: %s", c.diag())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the test's client writes again %v after the kill", time.Since(killedAt).Round(10*time.Millisecond))
	// With one replica, the promoted one has none until the old primary is back: with
	// REDIS_MIN_REPLICAS_ACK=1 nothing is accepted until then.
	c.restart(t)
	t.Logf("the old primary restarted %v after the kill", time.Since(killedAt).Round(10*time.Millisecond))
	for !apiReady.saw(200, killedAt.Add(500*time.Millisecond), time.Now()) || !workerReady.saw(200, killedAt.Add(500*time.Millisecond), time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("/readyz of the api or the worker did not answer 200 within 45s of the kill")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A fresh request is accepted again: the processes found the new primary by themselves.
	var probes []string
	for i := 0; ; i++ {
		a := call(context.Background(), api.addr, "POST", "/v1/resolve", token,
			map[string]string{"url": fmt.Sprintf("http://bit.ly/probe-%d", i), "webhook_url": hook.url("/hook")})
		if a.status == http.StatusAccepted {
			probes = append(probes, a.body["job_id"].(string))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no resolve accepted within 45s of the kill: last answer %d %s", a.status, a.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // steady load on the new primary
	stopLoad()
	results := wait()
	limWG.Wait()
	stopWatch()

	var rep failoverReport
	if !api.running() || !w.running() {
		t.Fatal("a process exited during the failover")
	}
	rep.readyAgain = max(apiReady.lastNot200(killedAt), workerReady.lastNot200(killedAt))

	var accepted []string
	var first503, last503 time.Time
	for _, r := range results {
		a := r.a
		switch {
		case a.err != nil:
			t.Errorf("%s: no answer: %v", r.idem, a.err)
		case a.status == http.StatusServiceUnavailable:
			rep.unavailable++
			if first503.IsZero() || r.at.Before(first503) {
				first503 = r.at
			}
			if r.at.After(last503) {
				last503 = r.at
			}
			if !isProblem(a, "service_unavailable") || a.header.Get("Retry-After") == "" {
				t.Errorf("%s: 503 without a complete service_unavailable problem and Retry-After: %v %s", r.idem, a.header, a.raw)
			}
		case a.status >= 500:
			t.Errorf("%s: %d %s", r.idem, a.status, a.raw)
		case a.status == http.StatusAccepted && r.idem != "poll":
			accepted = append(accepted, a.body["job_id"].(string))
			if r.start.After(killedAt) && (rep.firstAccepted == 0 || r.at.Sub(killedAt) < rep.firstAccepted) {
				rep.firstAccepted = r.at.Sub(killedAt)
			}
		}
	}
	if !last503.IsZero() {
		rep.window503 = last503.Sub(first503)
	}
	if rep.firstAccepted == 0 {
		t.Fatal("no request of the load sent after the kill was accepted")
	}
	accepted = append(accepted, probes...)

	// Every accepted job must end; one that is gone, or never ends, is lost.
	all := append(append([]string{}, accepted...), limAccepted...)
	rep.accepted = len(all)
	t.Logf("phase: load over, %v after the kill", time.Since(killedAt).Round(100*time.Millisecond))
	recs := s.settle(keyID, limID, all)
	t.Logf("phase: jobs settled, %v after the kill", time.Since(killedAt).Round(100*time.Millisecond))
	byID := map[string]jobs.Record{}
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	for _, id := range all {
		r, ok := recs[id]
		switch {
		case !ok:
			rep.lost++
		case !r.Status.Terminal():
			// Its worker's progress went with the old primary. If its task is still in
			// asynq (active, held by no one), asynq hands it out again once the task's
			// lease lapses (30 s, checked every minute): late, not lost. Without a task,
			// nothing will ever run it: lost.
			if _, err := insp.GetTaskInfo(jobs.QueueResolve, id); err != nil {
				rep.lost++
				t.Logf("job %s accepted, still %s, without a task: %v", id, r.Status, err)
			} else {
				rep.late++
			}
		case r.Status != jobs.StatusDone:
			t.Errorf("job %s ended %s: %v", id, r.Status, r.Error)
		default:
			byID[id] = r
		}
	}
	limMu.Lock()
	rep.limitAccepted = len(limAccepted)
	limMu.Unlock()
	rep.limitJobs = len(s.jobIDs(limID))

	// Webhooks: each surviving job that asked for one has it delivered or visibly failed.
	h := &hookStack{stack: s, token: token, keyID: keyID}
	arrived := map[string]bool{}
	for _, a := range hook.arrivals() {
		arrived[a.jobID] = true
		if !a.sig {
			t.Errorf("job %s: a delivery arrived unsigned", a.jobID)
		}
	}
	pending := map[string]bool{}
	for id, r := range byID {
		if r.WebhookURL != "" {
			rep.hooks++
			pending[id] = true
		}
	}
	// Until every webhook is delivered or failed, or none has changed for 8 s, or 20 s:
	// what is then still pending waits for asynq's recovery, or is lost.
	lastChange, hooksFrom := time.Now(), time.Now()
	for len(pending) > 0 && time.Since(lastChange) < 8*time.Second && time.Since(hooksFrom) < 20*time.Second {
		for id := range pending {
			r, err := h.store.Get(context.Background(), keyID, id)
			if err == nil && r.Webhook != nil && r.Webhook.Status != webhooks.StatusPending {
				if r.Webhook.Status == webhooks.StatusDelivered {
					rep.hooksDelivered++
				} else {
					rep.hooksFailed++
				}
				delete(pending, id)
				lastChange = time.Now()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for id := range pending {
		r, _ := h.store.Get(context.Background(), keyID, id)
		if r.Webhook != nil && r.Webhook.Status != webhooks.StatusPending {
			if r.Webhook.Status == webhooks.StatusDelivered {
				rep.hooksDelivered++
			} else {
				rep.hooksFailed++
			}
			continue
		}
		if _, err := insp.GetTaskInfo(jobs.QueueWebhooks, fmt.Sprintf("webhook:%s:%d", id, r.Webhook.Generation)); err != nil {
			rep.hooksLost++
			t.Logf("job %s: webhook pending without a task: %+v", id, r.Webhook)
		} else {
			rep.hooksLate++
		}
	}
	for _, a := range hook.arrivals() {
		arrived[a.jobID] = true
	}
	for id, r := range byID {
		if r.Webhook != nil && r.Webhook.Status == webhooks.StatusDelivered && !arrived[id] {
			t.Errorf("job %s: webhook delivered per the record, but the receiver never saw it", id)
		}
	}
	if rep.hooks == 0 {
		t.Error("no webhook was asked for: the load did not cover webhooks")
	}
	t.Logf("phase: webhooks settled, %v after the kill", time.Since(killedAt).Round(100*time.Millisecond))
	return rep
}

// lastNot200 is how long after from the last answer other than 200 came (0 when none did).
func (r *readiness) lastNot200(from time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last time.Time
	for _, s := range r.seen {
		if s.status != 200 && s.at.After(from) {
			last = s.at
		}
	}
	if last.IsZero() {
		return 0
	}
	return last.Sub(from)
}

// settle waits until every job of ids (of key keyID or limID) is terminal, or until the set
// of those that are not has not changed for 8 s (what is left is lost, or waits for asynq's
// recovery, which takes longer), or 90 s. It returns the records found.
func (s *stack) settle(keyID, limID string, ids []string) map[string]jobs.Record {
	out := map[string]jobs.Record{}
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	lastChange, lastPending := time.Now(), -1
	for {
		pending := 0
		for _, id := range ids {
			if r, ok := out[id]; ok && r.Status.Terminal() {
				continue
			}
			r, err := s.store.Get(ctx, keyID, id)
			if errors.Is(err, jobs.ErrNotFound) {
				r, err = s.store.Get(ctx, limID, id)
			}
			if err == nil {
				out[id] = r
			}
			if err != nil || !r.Status.Terminal() {
				pending++
			}
		}
		if pending != lastPending {
			lastChange, lastPending = time.Now(), pending
		}
		if pending == 0 || time.Since(lastChange) > 8*time.Second || time.Now().After(deadline) {
			return out
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lagThenKill stops replica, has primary take 16 MB of writes to keys of tag (so its
// replication stream backs up in its own memory), waits laggedFor under the load, then
// kills primary and resumes replica.
func lagThenKill(t *testing.T, primary, replica *redistest.Node, client *redis.Client, tag string) time.Time {
	t.Helper()
	ctx := context.Background()
	replica.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	junk := strings.Repeat("x", 1<<20)
	if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range 16 {
			p.Set(ctx, fmt.Sprintf("linkhop:%s:junk:%d", tag, i), junk, time.Minute)
		}
		return nil
	}); err != nil {
		replica.Signal(syscall.SIGCONT)
		t.Fatalf("writing the backlog: %v", err)
	}
	time.Sleep(laggedFor - time.Since(stopped))
	primary.Kill()
	killed := time.Now()
	replica.Signal(syscall.SIGCONT)
	t.Logf("replica stopped for %v, primary killed", killed.Sub(stopped).Round(time.Millisecond))
	return killed
}

// TestSentinelFailover: a primary, a replica and three sentinels; the primary is killed
// (SIGKILL) while its replica lags, under steady load with webhooks, with
// REDIS_MIN_REPLICAS_ACK off and on.
func TestSentinelFailover(t *testing.T) {
	for _, ack := range []int{0, 1} {
		t.Run("min_replicas_ack="+strconv.Itoa(ack), func(t *testing.T) {
			primary, replica := redistest.PrimaryWithReplica(t)
			sentinels := redistest.Sentinels(t, 3, "linkhop", primary.Addr, sentinelDownAfter)
			ctx := context.Background()
			for _, sn := range sentinels {
				sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
				waitCond(t, "each sentinel to know the replica and the other sentinels", func() bool {
					r, err1 := sc.Replicas(ctx, "linkhop").Result()
					o, err2 := sc.Sentinels(ctx, "linkhop").Result()
					return err1 == nil && err2 == nil && len(r) == 1 && len(o) == 2
				})
				_ = sc.Close()
			}
			rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "linkhop", SentinelAddrs: strings.Split(redistest.SentinelAddrs(sentinels), ",")})
			t.Cleanup(func() { _ = rdb.Close() })
			url := "redis-sentinel://" + redistest.SentinelAddrs(sentinels) + "/0?master=linkhop"
			s := newStackOn(t, rdb, []string{"REDIS_URL=" + url}, append(failoverEnv(), "REDIS_MIN_REPLICAS_ACK="+strconv.Itoa(ack))...)
			direct := primary.Client(redis.Options{})
			rep := runFailover(t, s, failoverCase{
				lagAndKill: func(t *testing.T, tag string) time.Time { return lagThenKill(t, primary, replica, direct, tag) },
				diag:       func() string { return tail(replica.Log(), 20) },
				restart: func(t *testing.T) {
					// Only once every sentinel names the promoted replica: a sentinel that has
					// not yet heard of the failover takes an old primary that is back for the
					// primary, and may make the promoted replica replicate it, which empties
					// it when the old primary comes back empty (seen here before this wait).
					host, port, _ := net.SplitHostPort(replica.Addr)
					for _, sn := range sentinels {
						sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
						waitCond(t, "every sentinel to name the promoted replica", func() bool {
							a, err := sc.GetMasterAddrByName(ctx, "linkhop").Result()
							return err == nil && len(a) == 2 && a[0] == host && a[1] == port
						})
						_ = sc.Close()
					}
					// Back as a replica of the promoted one, as a deployment that asks the
					// sentinels at start does it (the sentinels would convert it too, but
					// only at their next look, up to 10 s later).
					primary.Restart()
					if err := primary.Client(redis.Options{}).Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
						t.Fatal(err)
					}
				},
				writable: func(string) bool {
					c, cancel := context.WithTimeout(ctx, time.Second)
					defer cancel()
					return rdb.Set(c, "linkhop:{probe}", "1", time.Minute).Err() == nil
				},
			})
			t.Logf("Sentinel failover, REDIS_MIN_REPLICAS_ACK=%d: %v", ack, rep)
			checkFailover(t, ack, rep)
		})
	}
}

// checkFailover checks what REDIS_MIN_REPLICAS_ACK promises: with it on, no accepted job is
// lost and the limit holds. With it off, the lagging replica must have cost accepted jobs,
// or the test did not make the replica lag.
func checkFailover(t *testing.T, ack int, rep failoverReport) {
	t.Helper()
	if ack == 0 {
		if rep.lost == 0 {
			t.Error("no accepted job was lost without REDIS_MIN_REPLICAS_ACK: the replica did not lag")
		}
		return
	}
	if rep.lost != 0 {
		t.Errorf("%d accepted jobs lost with REDIS_MIN_REPLICAS_ACK=%d", rep.lost, ack)
	}
	if rep.limitAccepted > failoverLimit || rep.limitJobs > failoverLimit {
		t.Errorf("limit %d overshot: %d accepted, %d jobs", failoverLimit, rep.limitAccepted, rep.limitJobs)
	}
	if rep.hooksLost != 0 {
		t.Errorf("%d webhooks pending without a task: never delivered nor failed", rep.hooksLost)
	}
}

// waitCond polls cond for up to 30 s.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
