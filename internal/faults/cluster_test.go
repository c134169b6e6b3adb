//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/webhooks"
)

// clusterStack starts a Cluster of three primaries (each with replicasEach replicas) and a
// stack on it; extraEnv is added to every process's environment.
func clusterStack(t *testing.T, replicasEach int, extraEnv ...string) (s *stack, prim, repl []*redistest.Node, cc *redis.ClusterClient) {
	t.Helper()
	prim, repl = redistest.Cluster(t, 3, replicasEach, redis.Options{},
		"cluster-node-timeout "+strconv.Itoa(clusterNodeTimeout))
	addrs := make([]string, len(prim))
	for i, n := range prim {
		addrs[i] = n.Addr
	}
	cc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ClusterStateReloadInterval: app.ClusterStateReload})
	t.Cleanup(func() { _ = cc.Close() })
	s = newStackOn(t, cc, []string{"REDIS_CLUSTER_ADDRS=" + strings.Join(addrs, ",")}, extraEnv...)
	return s, prim, repl, cc
}

// TestClusterFailover: three primaries, each with a replica; the primary that holds the
// load's API key is killed (SIGKILL) while its replica lags, under steady load with
// webhooks, with REDIS_MIN_REPLICAS_ACK off and on.
func TestClusterFailover(t *testing.T) {
	for _, ack := range []int{0, 1} {
		t.Run("min_replicas_ack="+strconv.Itoa(ack), func(t *testing.T) {
			s, prim, repl, cc := clusterStack(t, 1, append(failoverEnv(), "REDIS_MIN_REPLICAS_ACK="+strconv.Itoa(ack))...)
			ctx := context.Background()
			owner := func(tag string) int {
				n, err := cc.MasterForKey(ctx, "linkhop:"+tag+":x")
				if err != nil {
					t.Fatal(err)
				}
				for i, p := range prim {
					if p.Addr == n.Options().Addr {
						return i
					}
				}
				t.Fatalf("%s is owned by %s, not an original primary", tag, n.Options().Addr)
				return -1
			}
			killed := -1
			rep := runFailover(t, s, failoverCase{
				lagAndKill: func(t *testing.T, tag string) time.Time {
					killed = owner(tag)
					t.Logf("killing primary %d of 3 (it owns %s; the resolve queue is on primary %d)", killed+1, tag, owner("{resolve}")+1)
					return lagThenKill(t, prim[killed], repl[killed], prim[killed].Client(redis.Options{}), tag)
				},
				writable: func(tag string) bool {
					c, cancel := context.WithTimeout(ctx, time.Second)
					defer cancel()
					err := cc.Set(c, "linkhop:"+tag+":probe", "1", time.Minute).Err()
					if err != nil && time.Now().Second()%5 == 0 {
						t.Logf("probe: %v", err)
					}
					return err == nil
				},
				// The old primary rejoins with its nodes.conf and becomes a replica of the
				// one that took its slots.
				restart: func(*testing.T) { prim[killed].Restart() },
				diag: func() string {
					nodes, err := repl[killed].Client(redis.Options{}).ClusterNodes(ctx).Result()
					return fmt.Sprintf("CLUSTER NODES (%v):\n%s\nthe replica's log:\n%s", err, nodes, tail(repl[killed].Log(), 20))
				},
			})
			t.Logf("Cluster failover, REDIS_MIN_REPLICAS_ACK=%d: %v", ack, rep)
			checkFailover(t, ack, rep)
		})
	}
}

// TestClusterWebhooks: webhooks on a three-primary Cluster with two workers: deliveries
// arrive signed; the per-URL rate holds across the workers (its keys are under the URL's
// hash tag, the jobs under their API keys' tags, the leases under their own); a delivery in
// flight on a killed worker is reaped and delivered by the other; a redelivery through the
// API is a new, delivered message.
func TestClusterWebhooks(t *testing.T) {
	const jobsPerHook = 20
	// A long WEBHOOK_TIMEOUT: the held delivery below stays in flight until its worker dies.
	s, _, _, _ := clusterStack(t, 0, append(hookEnv(), "WEBHOOK_TIMEOUT=20s")...)
	h := &hookStack{stack: s, api: s.startAPI()}
	w1, w2 := s.startWorker("worker-1"), s.startWorker("worker-2")
	h.token, h.keyID = s.newKey("--rate-limit", "0")
	// A second key: its jobs live in another slot (likely on another primary).
	tok2, key2 := s.newKey("--rate-limit", "0")

	// The rate per URL, with jobs of both keys.
	rc := newReceiver(t, nil)
	busy := rc.url("/busy")
	type job struct{ id, key string }
	var all []job
	for i := range jobsPerHook {
		tok, key := h.token, h.keyID
		if i%2 == 1 {
			tok, key = tok2, key2
		}
		a := call(context.Background(), h.api.addr, "POST", "/v1/resolve", tok,
			map[string]string{"url": fmt.Sprintf("http://bit.ly/cl-rate-%d", i), "webhook_url": busy})
		if a.status != http.StatusAccepted {
			t.Fatalf("submit: %d %s", a.status, a.raw)
		}
		all = append(all, job{a.body["job_id"].(string), key})
	}
	for _, j := range all {
		other := &hookStack{stack: s, keyID: j.key}
		if r := other.hookState(j.id, 60*time.Second); r.Webhook.Status != webhooks.StatusDelivered {
			t.Errorf("job %s: webhook %+v", j.id, r.Webhook)
		}
	}
	var times []time.Time
	seen := map[string]int{}
	for _, a := range rc.arrivals() {
		times = append(times, a.at)
		seen[a.jobID]++
		if !a.sig {
			t.Errorf("job %s: delivery without both signatures", a.jobID)
		}
	}
	if len(seen) != jobsPerHook {
		t.Fatalf("%d jobs delivered, want %d", len(seen), jobsPerHook)
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
	t.Logf("%d deliveries to one URL from two workers on Cluster; most in any 1 s: %d (limit %d)", len(times), worst, hookRate)
	if worst > hookRate {
		t.Errorf("%d attempts within one second at one URL; WEBHOOK_RATE_PER_SECOND is %d", worst, hookRate)
	}

	// A delivery in flight when its worker dies: held by the receiver, worker-1 killed; the
	// lease lapses and worker-2 delivers it.
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	slow := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			held <- struct{}{}
			<-release
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	inflight := h.submit("cl-inflight", slow.url("/slow"))
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the delivery never arrived")
	}
	// The worker running it, by asynq's list of what each server runs (written at its
	// heartbeat, every few seconds).
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	task := "webhook:" + inflight + ":1"
	var holder *proc
	deadline := time.Now().Add(15 * time.Second)
	for holder == nil {
		servers, err := insp.Servers()
		if err != nil {
			t.Logf("asynq servers: %v", err)
		}
		for _, srv := range servers {
			for _, w := range srv.ActiveWorkers {
				if w.TaskID != task {
					continue
				}
				for _, p := range []*proc{w1, w2} {
					if p.cmd.Process.Pid == srv.PID {
						holder = p
					}
				}
			}
		}
		if time.Now().After(deadline) {
			for _, srv := range servers {
				t.Logf("server pid %d: %d active: %+v", srv.PID, len(srv.ActiveWorkers), srv.ActiveWorkers)
			}
			t.Fatal("no worker is listed running the delivery")
		}
		time.Sleep(100 * time.Millisecond)
	}
	killedAt := time.Now()
	holder.kill()
	r := h.hookState(inflight, 30*time.Second)
	if r.Webhook.Status != webhooks.StatusDelivered || len(slow.arrivals()) != 2 {
		t.Errorf("in-flight delivery after its worker (%s) died: %+v, %d arrivals", holder.name, r.Webhook, len(slow.arrivals()))
	}
	t.Logf("%s killed mid-delivery; the other worker delivered it %v later", holder.name, time.Since(killedAt).Round(100*time.Millisecond))

	// A redelivery through the API: a new message, delivered.
	before := len(rc.arrivals())
	a := call(context.Background(), h.api.addr, "POST", "/v1/jobs/"+all[0].id+"/webhook/redeliver", h.token, nil)
	if a.status != http.StatusAccepted {
		t.Fatalf("redeliver: %d %s", a.status, a.raw)
	}
	r = h.hookState(all[0].id, 30*time.Second)
	got := rc.arrivals()
	if r.Webhook.Status != webhooks.StatusDelivered || r.Webhook.Generation != 2 || len(got) != before+1 || !got[len(got)-1].sig {
		t.Errorf("after the redelivery: webhook %+v, %d arrivals (had %d)", r.Webhook, len(got), before)
	}
}
