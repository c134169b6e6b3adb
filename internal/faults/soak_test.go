//go:build faults && soak

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/webhooks"
)

// sample is one reading of a process's /metrics.
type sample struct {
	at         time.Duration // since the soak started
	goroutines float64
	heap       float64 // go_memstats_heap_inuse_bytes
	rss        float64 // process_resident_memory_bytes
}

func scrape(addr string, at time.Duration) (sample, bool) {
	code, body := get(addr, "/metrics")
	if code != http.StatusOK {
		return sample{}, false
	}
	s := sample{at: at}
	for _, line := range strings.Split(body, "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_goroutines":
			s.goroutines = v
		case "go_memstats_heap_inuse_bytes":
			s.heap = v
		case "process_resident_memory_bytes":
			s.rss = v
		}
	}
	return s, true
}

// series keeps one process's samples.
type series struct {
	mu      sync.Mutex
	name    string
	samples []sample
}

func (s *series) add(x sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, x)
}

// flat compares the process's readings after warm-up: the last third may not exceed the
// first third by more than half plus a fixed allowance (goroutines come and go with the
// load; a leak grows without bound).
func (s *series) flat(t *testing.T, warmup time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var xs []sample
	for _, x := range s.samples {
		if x.at >= s.samples[0].at+warmup {
			xs = append(xs, x)
		}
	}
	if len(xs) < 4 {
		t.Errorf("%s: only %d samples after warm-up", s.name, len(xs))
		return ""
	}
	third := len(xs) / 3
	peak := func(part []sample, f func(sample) float64) float64 {
		m := 0.0
		for _, x := range part {
			m = max(m, f(x))
		}
		return m
	}
	g0, g1 := peak(xs[:third], func(x sample) float64 { return x.goroutines }), peak(xs[len(xs)-third:], func(x sample) float64 { return x.goroutines })
	h0, h1 := peak(xs[:third], func(x sample) float64 { return x.heap }), peak(xs[len(xs)-third:], func(x sample) float64 { return x.heap })
	r0, r1 := peak(xs[:third], func(x sample) float64 { return x.rss }), peak(xs[len(xs)-third:], func(x sample) float64 { return x.rss })
	if g1 > g0*1.5+20 {
		t.Errorf("%s: goroutines grew from %.0f to %.0f", s.name, g0, g1)
	}
	if h1 > h0*1.5+16<<20 {
		t.Errorf("%s: heap in use grew from %.1f MiB to %.1f MiB", s.name, h0/(1<<20), h1/(1<<20))
	}
	return fmt.Sprintf("| %s | %.0f → %.0f | %.1f → %.1f MiB | %.1f → %.1f MiB |", s.name, g0, g1,
		h0/(1<<20), h1/(1<<20), r0/(1<<20), r1/(1<<20))
}

// TestSoak is `make soak`: SOAK_DURATION (default 5m) of mixed traffic — new links, cached
// links, removed links, flaky providers, polls, idempotent replays, account and provider
// reads, a quarter of the jobs with a webhook — with the worker restarted (SIGTERM, new
// process) in the middle. Goroutines and memory must stay flat and no accepted job or
// webhook may be lost. The results are appended to SOAK_REPORT when it is set.
func TestSoak(t *testing.T) {
	dur := 5 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		dur = d
	}
	s := newStack(t, []string{"--appendonly", "yes", "--appendfsync", "everysec"}, append(hookEnv(),
		"WEBHOOK_RATE_PER_SECOND=50", "RESOLVE_BACKOFF_BASE=200ms", "WORKER_CONCURRENCY=20")...)
	s.short.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasPrefix(r.URL.Path, "/gone"):
			w.WriteHeader(http.StatusNotFound)
		case strings.HasPrefix(r.URL.Path, "/slow"):
			time.Sleep(300 * time.Millisecond)
			return false
		case strings.HasPrefix(r.URL.Path, "/flaky") && s.short.hitsOf(r.URL.Path) == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			return false
		}
		return true
	})
	hook := newReceiver(t, nil)
	api := s.startAPI()
	worker := s.startWorker("worker-1")
	token, keyID := s.newKey("--rate-limit", "0")

	start := time.Now()
	apiS, w1S, w2S := &series{name: "api"}, &series{name: "worker-1"}, &series{name: "worker-2"}
	var curWorker atomic.Pointer[proc]
	curWorker.Store(worker)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			at := time.Since(start)
			if x, ok := scrape(api.addr, at); ok {
				apiS.add(x)
			}
			w := curWorker.Load()
			target := w1S
			if w.name == "worker-2" {
				target = w2S
			}
			if x, ok := scrape(w.addr, at); ok {
				target.add(x)
			}
		}
	}()

	var (
		mu       sync.Mutex
		accepted = map[string]bool{} // job ids of every 202
		hooked   = map[string]bool{} // those submitted with a webhook
		statuses = map[string]int{}
		lat      []time.Duration
		n        atomic.Int64
		sent     sync.Map // request number -> body of the new-link requests
	)
	ctx, stop := context.WithTimeout(context.Background(), dur)
	defer stop()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), uint64(start.UnixNano())))
			var mine []string
			for ctx.Err() == nil {
				i := n.Add(1)
				var a answer
				op := rnd.IntN(100)
				t0 := time.Now()
				switch {
				case op < 45: // a new link; some removed, slow or flaky; a quarter with a webhook
					path := fmt.Sprintf("/soak-%d", i)
					switch rnd.IntN(20) {
					case 0:
						path = fmt.Sprintf("/gone-%d", i)
					case 1:
						path = fmt.Sprintf("/slow-%d", i)
					case 2:
						path = fmt.Sprintf("/flaky-%d", i)
					}
					body := map[string]string{"url": "http://bit.ly" + path, "idempotency_key": "soak-" + strconv.FormatInt(i, 10)}
					withHook := rnd.IntN(4) == 0
					if withHook {
						body["webhook_url"] = hook.url("/hook")
					}
					sent.Store(i, body)
					a = call(context.Background(), api.addr, "POST", "/v1/resolve", token, body)
					if withHook && a.status == http.StatusAccepted {
						mu.Lock()
						hooked[a.body["job_id"].(string)] = true
						mu.Unlock()
					}
				case op < 55: // a link resolved before: the cache answers
					a = call(context.Background(), api.addr, "POST", "/v1/resolve", token,
						map[string]string{"url": fmt.Sprintf("http://bit.ly/soak-%d", 1+rnd.Int64N(max(i/2, 1)))})
				case op < 60 && i > 10: // an idempotent replay of an earlier request, as it was sent
					b, ok := sent.Load(1 + rnd.Int64N(i-1))
					if !ok {
						continue
					}
					a = call(context.Background(), api.addr, "POST", "/v1/resolve", token, b)
				case op < 90 && len(mine) > 0: // a poll
					a = call(context.Background(), api.addr, "GET", "/v1/jobs/"+mine[rnd.IntN(len(mine))], token, nil)
				case op < 95:
					a = call(context.Background(), api.addr, "GET", "/v1/account", token, nil)
				default:
					a = call(context.Background(), api.addr, "GET", "/v1/providers", token, nil)
				}
				d := time.Since(t0)
				// Every 202 is a job that must end, whichever request made it.
				if id, _ := a.body["job_id"].(string); a.status == http.StatusAccepted && id != "" {
					mu.Lock()
					if _, ok := accepted[id]; !ok {
						accepted[id] = false
						mine = append(mine, id)
					}
					mu.Unlock()
				}
				key := strconv.Itoa(a.status)
				if a.err != nil {
					key = "no answer"
				}
				mu.Lock()
				statuses[key]++
				lat = append(lat, d)
				mu.Unlock()
				time.Sleep(time.Duration(5+rnd.IntN(20)) * time.Millisecond)
			}
		}()
	}

	// The worker restart, in the middle.
	time.Sleep(dur / 2)
	restartAt := time.Since(start)
	worker.signal(syscall.SIGTERM)
	if code := worker.wait(30 * time.Second); code != 0 {
		t.Errorf("worker-1 exit %d on SIGTERM", code)
	}
	curWorker.Store(s.startWorker("worker-2"))
	wg.Wait()
	loadEnd := time.Since(start)

	// Every accepted job ends; every webhook of one ends delivered.
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	recs := s.waitTerminal(keyID, ids, 3*time.Minute)
	byStatus := map[jobs.Status]int{}
	lost, hooks, delivered := 0, 0, 0
	h := &hookStack{stack: s, token: token, keyID: keyID}
	for _, id := range ids {
		r := recs[id]
		byStatus[r.Status]++
		if !r.Status.Terminal() {
			lost++
			t.Errorf("job %s lost: %q; task %s", id, r.Status, s.taskState(id))
			continue
		}
		if hooked[id] {
			hooks++
			if st := h.hookState(id, time.Minute).Webhook; st.Status == webhooks.StatusDelivered {
				delivered++
			} else {
				t.Errorf("job %s webhook %+v", id, st)
			}
		}
	}
	time.Sleep(10 * time.Second) // a last idle sample
	close(stopSampling)
	<-sampled

	if statuses["no answer"] > 0 {
		t.Errorf("%d requests got no answer", statuses["no answer"])
	}
	for k, v := range statuses {
		if strings.HasPrefix(k, "5") {
			t.Errorf("%d answers with status %s", v, k)
		}
	}
	rows := []string{apiS.flat(t, min(time.Minute, dur/5)), w1S.flat(t, min(30*time.Second, dur/10)), w2S.flat(t, min(30*time.Second, dur/10))}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)].Round(time.Millisecond) }
	keysSorted := make([]string, 0, len(statuses))
	for k := range statuses {
		keysSorted = append(keysSorted, k)
	}
	slices.Sort(keysSorted)
	var answers []string
	for _, k := range keysSorted {
		answers = append(answers, fmt.Sprintf("%s: %d", k, statuses[k]))
	}
	verdict := "PASS"
	if t.Failed() {
		verdict = "FAIL"
	}
	report := fmt.Sprintf(`
### Soak run %s — %s

- Duration %v of load (6 clients, 5–25 ms between requests each), worker restarted (SIGTERM, new process) at %v.
- Requests: %d; answers %s; latency p50 %v, p99 %v, max %v.
- Jobs accepted: %d; ended done %d, failed %d, invalid %d; **lost %d**. Webhooks: %d, delivered %d.
- Goroutines, heap in use and RSS (peak of the first third after warm-up → peak of the last third):

| process | goroutines | heap in use | RSS |
|---|---|---|---|
%s
`, time.Now().UTC().Format("2006-01-02 15:04 UTC"), verdict, loadEnd.Round(time.Second), restartAt.Round(time.Second),
		len(lat), strings.Join(answers, ", "), pct(0.5), pct(0.99), lat[len(lat)-1].Round(time.Millisecond),
		len(ids), byStatus[jobs.StatusDone], byStatus[jobs.StatusFailed], byStatus[jobs.StatusInvalid], lost,
		hooks, delivered, strings.Join(rows, "\n"))
	t.Log(report)
	if path := os.Getenv("SOAK_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatalf("SOAK_REPORT: %v", err)
		}
		defer f.Close()
		if _, err := f.WriteString(report); err != nil {
			t.Fatal(err)
		}
	}
}
