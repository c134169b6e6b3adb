//go:build faults

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/jobs"
)

// loadResult is one request of a load generator.
type loadResult struct {
	idem  string
	a     answer
	start time.Time // when the request was sent
	at    time.Time // when its answer (or error) came
}

// resolveLoad posts resolves with unique idempotency keys (prefix-n) from workers
// goroutines until ctx ends, with a poll of the previous job between posts. When hook is set,
// every third resolve asks for a webhook to it.
func resolveLoad(ctx context.Context, addr func() string, token, prefix, hook string, workers int) (wait func() []loadResult) {
	var (
		mu  sync.Mutex
		out []loadResult
		n   atomic.Int64
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := ""
			for ctx.Err() == nil {
				i := n.Add(1)
				idem := fmt.Sprintf("%s-%d", prefix, i)
				start := time.Now()
				body := map[string]string{"url": "http://bit.ly/" + idem, "idempotency_key": idem}
				if hook != "" && i%3 == 0 {
					body["webhook_url"] = hook
				}
				a := call(context.Background(), addr(), "POST", "/v1/resolve", token, body)
				mu.Lock()
				out = append(out, loadResult{idem: idem, a: a, start: start, at: time.Now()})
				mu.Unlock()
				if id, _ := a.body["job_id"].(string); id != "" {
					last = id
				}
				if a.err != nil {
					time.Sleep(20 * time.Millisecond) // refused: do not spin
					continue
				}
				if last != "" && i%2 == 0 {
					start := time.Now()
					p := call(context.Background(), addr(), "GET", "/v1/jobs/"+last, token, nil)
					mu.Lock()
					out = append(out, loadResult{idem: "poll", a: p, start: start, at: time.Now()})
					mu.Unlock()
				}
			}
		}()
	}
	return func() []loadResult {
		wg.Wait()
		return out
	}
}

// refused reports whether err is a refused connection: the request was never admitted.
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// TestAPIGracefulShutdown: SIGTERM under load. The API must stop accepting connections at
// once, finish every request it has admitted (the slow uploads below are admitted before the
// signal and need Redis after it, so they also prove Redis closes last), answer none of them
// with a 5xx or a dropped connection, and exit 0. Every job or idempotency claim in Redis
// must belong to a request whose answer the client received.
func TestAPIGracefulShutdown(t *testing.T) {
	s := newStack(t, nil)
	api := s.startAPI("SHUTDOWN_TIMEOUT=15s")
	token, keyID := s.newKey("--rate-limit", "0")

	// Slow uploads: headers and the start of the body now, the rest after SIGTERM.
	const slow = 4
	conns := make([]net.Conn, slow)
	rests := make([]string, slow)
	for i := range conns {
		c, err := net.Dial("tcp", api.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		body := fmt.Sprintf(`{"url":"http://bit.ly/slow-%d","idempotency_key":"slow-%d"}`, i, i)
		fmt.Fprintf(c, "POST /v1/resolve HTTP/1.1\r\nHost: linkhop\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", token, len(body), body[:10])
		conns[i], rests[i] = c, body[10:]
	}

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	wait := resolveLoad(ctx, func() string { return api.addr }, token, "load", "", 8)
	time.Sleep(1500 * time.Millisecond)

	api.signal(syscall.SIGTERM)
	// Stops accepting: a new connection is refused while the admitted requests still drain.
	time.Sleep(500 * time.Millisecond)
	if !api.running() {
		t.Fatal("the API exited while requests were in flight")
	}
	if c, err := net.DialTimeout("tcp", api.addr, time.Second); err == nil {
		c.Close()
		t.Error("the API still accepts connections after SIGTERM")
	} else if !refused(err) {
		t.Errorf("dial after SIGTERM: %v, want connection refused", err)
	}

	// Finishes in-flight requests, using Redis after the signal.
	received := map[string]bool{}
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := io.WriteString(c, rests[i]); err != nil {
			t.Errorf("slow request %d: writing the rest of the body: %v", i, err)
			continue
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("slow request %d: admitted before SIGTERM but dropped: %v", i, err)
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			t.Errorf("slow request %d: %d %s", i, res.StatusCode, b)
			continue
		}
		id := strings.TrimPrefix(res.Header.Get("Location"), "/v1/jobs/")
		received[id] = true
	}

	if code := api.wait(20 * time.Second); code != 0 {
		t.Errorf("api exit code %d after SIGTERM, want 0", code)
	}
	stopLoad()
	results := wait()

	var ok, refusedN, dropped int
	for _, r := range results {
		switch {
		case r.a.err != nil && refused(r.a.err):
			refusedN++
		case r.a.err != nil:
			dropped++
			t.Logf("no answer (%s): %v", r.idem, r.a.err)
		case r.a.status >= 500:
			t.Errorf("%s: %d %s", r.idem, r.a.status, r.a.raw)
		default:
			ok++
			if id, _ := r.a.body["job_id"].(string); id != "" {
				received[id] = true
			}
		}
	}
	t.Logf("load: %d answered, %d refused after the listener closed, %d without answer", ok, refusedN, dropped)
	if ok < 20 {
		t.Fatalf("only %d requests answered before the signal: the load did not run", ok)
	}
	// Nothing admitted went unanswered: every trace a request left in Redis is one whose
	// answer the client has. (A request the kernel queued but the API never accepted leaves no
	// trace, and its client sees a reset: it was never admitted.)
	for _, id := range s.jobIDs(keyID) {
		if !received[id] {
			t.Errorf("job %s exists but its client got no answer", id)
		}
	}
	for _, id := range s.claims(keyID) {
		if !received[id] {
			t.Errorf("idempotency claim for job %s exists but its client got no answer", id)
		}
	}
	if len(api.logs.lines("api stopped")) != 1 {
		t.Error(`the API did not log "api stopped"`)
	}
}

// TestWorkerGracefulShutdown: SIGTERM with tasks running. The worker stops fetching at once,
// lets the tasks that finish within SHUTDOWN_TIMEOUT finish, puts the rest back in the queue
// (no retry spent, the job not failed), and exits within SHUTDOWN_TIMEOUT plus a margin; a new
// worker then completes every job.
func TestWorkerGracefulShutdown(t *testing.T) {
	const shutdownTimeout = 3 * time.Second
	s := newStack(t, nil, "SHUTDOWN_TIMEOUT="+shutdownTimeout.String(), "RESOLVE_TIMEOUT=4s")
	release := make(chan struct{})
	arrived := make(chan string, 10)
	s.short.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasPrefix(r.URL.Path, "/quick"):
			arrived <- r.URL.Path
			time.Sleep(time.Second) // finishes well within the shutdown timeout
		case r.URL.Path == "/stuck" && s.short.hitsOf("/stuck") == 1:
			arrived <- r.URL.Path
			select { // the first attempt outlives the shutdown timeout
			case <-release:
			case <-time.After(15 * time.Second):
			}
		}
		return false
	})
	api := s.startAPI()
	w1 := s.startWorker("worker-1")
	token, keyID := s.newKey("--rate-limit", "0")
	submit := func(path string) string {
		t.Helper()
		a := call(context.Background(), api.addr, "POST", "/v1/resolve", token, map[string]string{"url": "http://bit.ly" + path})
		if a.status != http.StatusAccepted {
			t.Fatalf("submit %s: %d %s %v", path, a.status, a.raw, a.err)
		}
		return a.body["job_id"].(string)
	}
	quick1, quick2, stuck := submit("/quick-1"), submit("/quick-2"), submit("/stuck")
	for range 3 {
		select {
		case <-arrived:
		case <-time.After(15 * time.Second):
			t.Fatal("the worker did not start all three resolves")
		}
	}

	sigAt := time.Now()
	w1.signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	after := submit("/after") // queued while the worker shuts down: it must not be fetched

	code := w1.wait(shutdownTimeout + 3*time.Second)
	took := time.Since(sigAt)
	if code != 0 {
		t.Fatalf("worker exit code %d, %v after SIGTERM (SHUTDOWN_TIMEOUT %v)", code, took, shutdownTimeout)
	}
	t.Logf("worker exited %v after SIGTERM", took.Round(10*time.Millisecond))
	if took < shutdownTimeout-500*time.Millisecond {
		t.Errorf("worker exited after %v, before its running task had SHUTDOWN_TIMEOUT to finish", took)
	}

	recs := s.waitTerminal(keyID, []string{quick1, quick2}, time.Second)
	for _, id := range []string{quick1, quick2} {
		if r := recs[id]; r.Status != jobs.StatusDone {
			t.Errorf("job %s that finished within the timeout is %s", id, r.Status)
		}
	}
	if n := s.short.hitsOf("/after"); n != 0 {
		t.Errorf("the stopping worker fetched a task queued after SIGTERM (%d hits)", n)
	}
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	for name, id := range map[string]string{"unfinished": stuck, "queued after SIGTERM": after} {
		info, err := insp.GetTaskInfo(jobs.QueueResolve, id)
		if err != nil {
			t.Fatalf("%s task: %v", name, err)
		}
		if info.State != asynq.TaskStatePending || info.Retried != 0 {
			t.Errorf("%s task is %v with %d retries, want pending with none", name, info.State, info.Retried)
		}
		if r, err := s.store.Get(context.Background(), keyID, id); err != nil || r.Status.Terminal() {
			t.Errorf("%s job: %v %v, want not terminal", name, r.Status, err)
		}
	}
	if len(w1.logs.lines("worker stopped")) != 1 {
		t.Error(`the worker did not log "worker stopped"`)
	}

	// The returned task and the new one complete on the next worker.
	close(release)
	s.startWorker("worker-2")
	recs = s.waitTerminal(keyID, []string{stuck, after}, 60*time.Second)
	for _, id := range []string{stuck, after} {
		if r := recs[id]; r.Status != jobs.StatusDone || r.TargetURL == nil {
			t.Errorf("job %s after restart: %s", id, r.Status)
		}
	}
}
