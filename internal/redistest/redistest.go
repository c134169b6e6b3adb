// Package redistest starts real redis-server processes for tests.
//
// Every test that needs Redis gets its own server on a free loopback port, so tests never
// touch a Redis that happens to run on 6379 and never see each other's keys. Starting a
// server takes a few milliseconds; isolation is worth more than that.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process owned by a test.
type Server struct {
	// Addr is host:port of the server.
	Addr string
	dir  string
	args []string
	cmd  *exec.Cmd
	tb   testing.TB
}

// URL is the redis:// URL of the server, as REDIS_URL takes it.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Start starts a dedicated redis-server for tb and stops it in tb's cleanup. Extra
// arguments are passed to redis-server (for example "--appendonly", "yes").
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	s := &Server{dir: tb.TempDir(), args: extra, tb: tb}
	onFreePort(tb, func(port int) error {
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return s.launch()
	})
	tb.Cleanup(s.Stop)
	return s
}

// onFreePort calls launch with free loopback ports until it starts a redis-server (another
// process may take a port between the check and the launch), and fails tb after five tries
// or when redis-server is not installed.
func onFreePort(tb testing.TB, launch func(port int) error) {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redistest: redis-server is not on PATH (make test installs it): %v", err)
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		if lastErr = launch(port); lastErr == nil {
			return
		}
	}
	tb.Fatalf("redistest: starting redis-server: %v", lastErr)
}

// New starts a dedicated server and returns a client for it; both are closed at cleanup.
func New(tb testing.TB) *redis.Client {
	tb.Helper()
	return Start(tb).Client(tb)
}

// StartClusterNode starts a one-node Redis Cluster that holds every slot and waits until the
// cluster is ok: for tests of what a plain client meets on a Cluster node (CROSSSLOT for a
// script or command whose keys span slots).
func StartClusterNode(tb testing.TB) *Server {
	tb.Helper()
	s := Start(tb, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	c := s.Client(tb)
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(c.ClusterInfo(ctx).Val(), "cluster_state:ok"); {
		if time.Now().After(deadline) {
			tb.Fatal("redistest: the cluster node is not ok after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// Client returns a new client of the server, closed at cleanup.
func (s *Server) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *Server) launch() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{
		"--port", port, "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
		"--logfile", "redis.log",
	}
	args = append(args, s.args...)
	cmd := exec.Command("redis-server", args...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(s.dir + "/redis.log")
			return fmt.Errorf("redis-server exited (%w): %s", err, log)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		pid, err := serverPID(ctx, c)
		cancel()
		if err == nil && pid != cmd.Process.Pid {
			// Another test's server took the port between freePort and this launch: it answers
			// while this one fails to bind. Taking it for ours would leave this test talking to
			// a server that the other test stops at its end.
			_ = cmd.Process.Kill()
			return fmt.Errorf("redistest: %s is served by another redis-server (pid %d)", s.Addr, pid)
		}
		if err == nil {
			s.cmd = cmd
			go func() { <-exited }() //nolint:errcheck // reap; the exit status of a stopped server is of no interest
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return fmt.Errorf("redis-server on %s did not answer within 10s", s.Addr)
}

// Stop kills the server. It is safe to call more than once.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	// Wait until the port is free so a Restart can bind it again.
	for range 200 {
		conn, err := net.DialTimeout("tcp", s.Addr, 20*time.Millisecond)
		if err != nil {
			break
		}
		_ = conn.Close()
		time.Sleep(5 * time.Millisecond)
	}
	s.cmd = nil
}

// Restart stops the server and starts it again on the same address and directory, so an
// append-only file written before is read back. Fault tests use it to simulate an outage.
func (s *Server) Restart(down time.Duration) error {
	s.Stop()
	time.Sleep(down)
	return s.launch()
}

// serverPID is the process id of the redis-server that c reaches (INFO server).
func serverPID(ctx context.Context, c *redis.Client) (int, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("redistest: INFO server has no process_id")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
