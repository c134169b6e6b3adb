//go:build faults

package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
)

// bins are the binaries under test, built once by TestMain.
var bins struct{ api, worker string }

// TestMain builds cmd/api and cmd/worker once, without -race (the binaries are what a
// deployment runs; the race detector would only slow the faults down), runs the tests, and
// checks that no goroutine of the test process outlived them.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "linkhop-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	bins.api, bins.worker = filepath.Join(dir, "api"), filepath.Join(dir, "worker")
	for bin, pkg := range map[string]string{bins.api: "./cmd/api", bins.worker: "./cmd/worker"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = moduleRoot()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "faults: building", pkg+":", err)
			_ = os.RemoveAll(dir)
			os.Exit(2)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "faults: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// moduleRoot is the directory of go.mod, two levels above this package.
func moduleRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// logBuf collects a child's output; safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the JSON log lines whose msg contains substr.
func (l *logBuf) lines(substr string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if msg, _ := m["msg"].(string); strings.Contains(msg, substr) {
			out = append(out, m)
		}
	}
	return out
}

// proc is one running api or worker process.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	logs  *logBuf
	addr  string // the HTTP address it bound (API or ops listener)
	done  chan struct{}
	err   error // Wait's result, set before done closes
	ended time.Time
}

// startProc runs bin with env (and nothing else of the test's environment but PATH) and
// waits for the log line msg that carries its bound address in addrField.
func startProc(t *testing.T, name, bin string, env []string, msg, addrField string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, logs: &logBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_FORMAT=json", "HTTP_ADDR=127.0.0.1:0"}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if dir := os.Getenv("FAULTS_LOGDIR"); dir != "" {
			// Whole logs for a person investigating a failure (make test-faults FAULTS_LOGDIR=…).
			name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "-" + p.name + ".log"
			_ = os.WriteFile(filepath.Join(dir, name), []byte(p.logs.String()), 0o644)
		}
		if t.Failed() {
			t.Logf("--- %s output (last 40 lines) ---\n%s", name, tail(p.logs.String(), 40))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ls := p.logs.lines(msg); len(ls) > 0 {
			p.addr, _ = ls[0][addrField].(string)
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited at start (%v):\n%s", name, p.err, p.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not log %q within 30s:\n%s", name, msg, p.logs.String())
	return nil
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// wait waits up to d for the process to exit and returns its exit code: 128+n for death by
// signal n (as a shell reports it), -1 while it still runs.
func (p *proc) wait(d time.Duration) int {
	select {
	case <-p.done:
	case <-time.After(d):
		return -1
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if p.err != nil {
		return -2
	}
	return 0
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill ends the process at once (SIGKILL) if it still runs, and reaps it.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// shortener is a local stand-in for a provider: LINKHOP_HOST_OVERRIDES points bit.ly at it.
// By default every path redirects to https://example.com/dest<path>, a destination (not a
// provider host, so the worker stops there without fetching it).
type shortener struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits map[string]int
	// hook, when set, handles a request first; it returns false to fall through to the
	// default redirect.
	hook func(w http.ResponseWriter, r *http.Request) bool
}

func newShortener(t *testing.T) *shortener {
	s := &shortener{hits: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		hook := s.hook
		s.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *shortener) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

func (s *shortener) hitsOf(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// stack is one linkhop deployment under test: Redis, a shortener, and the processes the test
// starts; env is what every process gets.
type stack struct {
	t     *testing.T
	redis *redistest.Server // nil for a stack on a topology (newStackOn)
	rdb   redis.UniversalClient
	short *shortener
	env   []string
	store *jobs.Store
}

// newStack starts Redis (with redisArgs) and the shortener. extraEnv is added to every
// process's environment (later entries win).
func newStack(t *testing.T, redisArgs []string, extraEnv ...string) *stack {
	t.Helper()
	srv := redistest.Start(t, redisArgs...)
	s := newStackOn(t, srv.Client(t), []string{"REDIS_URL=" + srv.URL()}, extraEnv...)
	s.redis = srv
	return s
}

// newStackOn is newStack on a Redis the test built (Sentinel, Cluster): rdb is the test's
// own client of it, redisEnv the variables that point the processes at it.
func newStackOn(t *testing.T, rdb redis.UniversalClient, redisEnv []string, extraEnv ...string) *stack {
	t.Helper()
	s := &stack{t: t, rdb: rdb, short: newShortener(t)}
	s.env = append(append(append([]string{}, redisEnv...),
		"LINKHOP_HOST_OVERRIDES=bit.ly="+strings.TrimPrefix(s.short.srv.URL, "http://"),
		"RESOLVE_BACKOFF_BASE=100ms",
		"RESOLVE_TIMEOUT=5s",
		"SHUTDOWN_TIMEOUT=5s",
		"WORKER_CONCURRENCY=20",
		"LOG_LEVEL=info",
	), extraEnv...)
	s.store = jobs.NewStore(s.rdb, time.Hour)
	return s
}

func (s *stack) startAPI(extra ...string) *proc {
	s.t.Helper()
	return startProc(s.t, "api", bins.api, append(append([]string{}, s.env...), extra...), "api listening", "addr")
}

func (s *stack) startWorker(name string, extra ...string) *proc {
	s.t.Helper()
	return startProc(s.t, name, bins.worker, append(append([]string{}, s.env...), extra...), "worker running", "ops_addr")
}

// newKey runs `api keys create` and returns the key's token and id.
func (s *stack) newKey(args ...string) (token, id string) {
	s.t.Helper()
	cmd := exec.Command(bins.api, append([]string{"keys", "create", "--name", "faults"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, s.env...)
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("keys create: %v %s", err, out)
	}
	var c struct {
		Key string `json:"key"`
		ID  string `json:"id"`
	}
	if err := json.Unmarshal(out, &c); err != nil || c.Key == "" {
		s.t.Fatalf("keys create printed %q: %v", out, err)
	}
	return c.Key, c.ID
}

// answer is one HTTP exchange's result as the tests look at it.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
	err    error
}

// call sends one JSON request to base (host:port) with a fresh connection and a timeout.
func call(ctx context.Context, base, method, path, token string, body any, hdr ...string) answer {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+base+path, rd)
	if err != nil {
		return answer{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := freshClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode, header: res.Header, raw: raw, err: err}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// freshClient opens a new connection per request, so one request's fate never depends on a
// kept-alive connection that another request left behind.
var freshClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// isProblem reports whether a is a complete problem+json with code.
func isProblem(a answer, code string) bool {
	if a.header.Get("Content-Type") != "application/problem+json" || a.body["code"] != code {
		return false
	}
	for _, f := range []string{"type", "title", "status", "detail", "instance"} {
		if _, ok := a.body[f]; !ok {
			return false
		}
	}
	return true
}

// waitTerminal waits until every job in ids is terminal in Redis, or d passes; it returns
// the records (terminal or not) by id.
func (s *stack) waitTerminal(keyID string, ids []string, d time.Duration) map[string]jobs.Record {
	s.t.Helper()
	out := map[string]jobs.Record{}
	deadline := time.Now().Add(d)
	for {
		pending := 0
		for _, id := range ids {
			if r, ok := out[id]; ok && r.Status.Terminal() {
				continue
			}
			r, err := s.store.Get(context.Background(), keyID, id)
			if err == nil {
				out[id] = r
			}
			if err != nil || !r.Status.Terminal() {
				pending++
			}
		}
		if pending == 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// jobIDs lists the ids of the job records of keyID in Redis.
func (s *stack) jobIDs(keyID string) []string {
	s.t.Helper()
	var ids []string
	for _, k := range s.scan("linkhop:{k:" + keyID + "}:job:*") {
		ids = append(ids, k[strings.LastIndex(k, ":")+1:])
	}
	return ids
}

// claims returns the job ids named by the idempotency claims of keyID in Redis.
func (s *stack) claims(keyID string) []string {
	s.t.Helper()
	var ids []string
	ctx := context.Background()
	for _, k := range s.scan("linkhop:{k:" + keyID + "}:idem:*") {
		v, err := s.rdb.Get(ctx, k).Result()
		if err != nil {
			continue
		}
		var c jobs.Claim
		if json.Unmarshal([]byte(v), &c) == nil {
			ids = append(ids, c.JobID)
		}
	}
	return ids
}

// scan lists the keys that match pattern, on every primary of a Cluster.
func (s *stack) scan(pattern string) []string {
	s.t.Helper()
	ctx := context.Background()
	var (
		mu  sync.Mutex
		out []string
	)
	each := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, each)
	case *redis.Client:
		err = each(ctx, c)
	default:
		s.t.Fatalf("scan: a %T", s.rdb)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// taskState describes the asynq task of job id, for failure messages.
func (s *stack) taskState(id string) string {
	insp := asynq.NewInspectorFromRedisClient(s.rdb)
	info, err := insp.GetTaskInfo(jobs.QueueResolve, id)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%v, retried %d/%d, last error %q at %v", info.State, info.Retried, info.MaxRetry,
		info.LastErr, info.LastFailedAt.Format("15:04:05.000"))
}

// get fetches an ops endpoint (health, metrics) of a process.
func get(addr, path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
	res, err := freshClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
