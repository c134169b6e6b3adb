package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/resolve"
)

// These tests run the real api with its in-process worker against Redis topologies other
// than a single server, and drive one resolve end to end over HTTP: a key made through
// /admin/keys, POST /v1/resolve, polls until the job is done. That touches the key store,
// the limiter script, job records, asynq's queue and the resolve cache on that topology.

// TestClusterEndToEnd runs linkhop on a three-master Redis Cluster (REDIS_CLUSTER_ADDRS).
func TestClusterEndToEnd(t *testing.T) {
	t.Parallel()
	var nodes []*redistest.Server
	var buses []int
	for range 3 {
		// An explicit bus port: the default, port+10000, may be taken or out of range.
		bus, err := freeTCPPort()
		if err != nil {
			t.Fatal(err)
		}
		buses = append(buses, bus)
		nodes = append(nodes, redistest.Start(t, "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-port", strconv.Itoa(bus)))
	}
	ctx := context.Background()
	first := nodes[0].Client(t)
	for i, n := range nodes {
		c := n.Client(t)
		lo, hi := i*16384/3, (i+1)*16384/3-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			t.Fatalf("ADDSLOTSRANGE on %s: %v", n.Addr, err)
		}
		if i > 0 {
			host, port, _ := net.SplitHostPort(n.Addr)
			if err := first.Do(ctx, "CLUSTER", "MEET", host, port, buses[i]).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "cluster_state:ok on every node", func() bool {
		for _, n := range nodes {
			info, err := n.Client(t).ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
				return false
			}
		}
		return true
	})
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	resolveEndToEnd(t, map[string]string{"REDIS_CLUSTER_ADDRS": strings.Join(addrs, ",")})
}

// TestSentinelEndToEnd runs linkhop through a Sentinel (redis-sentinel:// as asynq parses it).
func TestSentinelEndToEnd(t *testing.T) {
	t.Parallel()
	primary := redistest.Start(t)
	sentinel := startSentinel(t, primary.Addr)
	resolveEndToEnd(t, map[string]string{"REDIS_URL": "redis-sentinel://" + sentinel + "?master=linkhop"})
}

// resolveEndToEnd starts the api (with its worker) on the given Redis settings and resolves
// one link through the HTTP API.
func resolveEndToEnd(t *testing.T, env map[string]string) {
	t.Helper()
	short := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.com/dest"+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(short.Close)
	vars := map[string]string{
		"HTTP_ADDR": "127.0.0.1:0", "LINKHOP_ADMIN_TOKEN": "topology-admin", "SHUTDOWN_TIMEOUT": "2s",
		"LINKHOP_HOST_OVERRIDES": "sho.rt=" + strings.TrimPrefix(short.URL, "http://"),
		"RESOLVE_BACKOFF_BASE":   "50ms", "WORKER_CONCURRENCY": "4",
	}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(config.API, func(n string) (string, bool) { v, ok := vars[n]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, slog.New(slog.DiscardHandler), runOptions{
			worker:    true,
			providers: []resolve.Provider{{ID: "short", Label: "Short", Hosts: []string{"sho.rt"}, Tier: "standard"}},
			ready:     func(d deps) { addr <- d.ln.Addr().String() },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the api did not start")
	}

	call := func(method, path, token string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}

	if st, _ := call("GET", "/readyz", "", nil); st != 200 {
		t.Fatalf("/readyz %d", st)
	}
	st, created := call("POST", "/admin/keys", "topology-admin", map[string]any{"name": "topology", "daily_quota": 10})
	if st != 201 {
		t.Fatalf("creating a key: %d %v", st, created)
	}
	token := created["key"].(string)
	st, queued := call("POST", "/v1/resolve", token, map[string]any{"url": "http://sho.rt/abc", "idempotency_key": "once"})
	if st != 202 {
		t.Fatalf("resolve: %d %v", st, queued)
	}
	id := queued["job_id"].(string)
	var job map[string]any
	waitFor(t, "the job to finish", func() bool {
		st, job = call("GET", "/v1/jobs/"+id, token, nil)
		return st == 200 && (job["status"] == "done" || job["status"] == "failed" || job["status"] == "invalid")
	})
	if job["status"] != "done" || job["target_url"] != "https://example.com/dest/abc" {
		t.Fatalf("job %v", job)
	}
	// A replay answers for the same job; the cache answers a fresh request at once.
	if st, replay := call("POST", "/v1/resolve", token, map[string]any{"url": "http://sho.rt/abc", "idempotency_key": "once"}); st != 200 || replay["job_id"] != id {
		t.Errorf("replay: %d %v", st, replay)
	}
	if st, cached := call("POST", "/v1/resolve", token, map[string]any{"url": "http://sho.rt/abc"}); st != 200 || cached["cached"] != true {
		t.Errorf("cached: %d %v", st, cached)
	}
	if st, account := call("GET", "/v1/account", token, nil); st != 200 || account["daily_used"] != 2.0 {
		t.Errorf("account after one job, one replay and one cached answer: %d %v", st, account)
	}
}

// startSentinel runs a Sentinel watching the primary at primaryAddr as master "linkhop" and
// returns its address; it is killed at cleanup.
func startSentinel(t *testing.T, primaryAddr string) string {
	t.Helper()
	port, err := freeTCPPort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	host, pport, _ := net.SplitHostPort(primaryAddr)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor linkhop %s %s 1\n", port, dir, host, pport)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = s.Close() })
	waitFor(t, "the sentinel to know the primary", func() bool {
		a, err := s.GetMasterAddrByName(context.Background(), "linkhop").Result()
		return err == nil && len(a) == 2 && net.JoinHostPort(a[0], a[1]) == primaryAddr
	})
	return addr
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
