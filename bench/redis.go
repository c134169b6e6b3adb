package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is one redis-server process owned by the benchmark, started the way
// internal/redistest starts them for tests: a free loopback port, no persistence, killed at the
// end. A benchmark never touches a Redis it did not start.
type redisServer struct {
	addr    string
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	version string
}

// startRedis starts redis-server in a fresh temporary directory and waits until it answers.
func startRedis(ctx context.Context) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%w (make bench installs it): %w", errNoRedisServer, err)
	}
	dir, err := os.MkdirTemp("", "linkhop-bench-redis-")
	if err != nil {
		return nil, fmt.Errorf("redis temp dir: %w", err)
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir}
		if lastErr = s.launch(ctx, bin); lastErr == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("starting redis-server: %w", lastErr)
}

func (s *redisServer) launch(ctx context.Context, bin string) error {
	_, port, _ := net.SplitHostPort(s.addr)
	// The memory limit is a guard: a run queues a few hundred thousand tasks at most, far below it.
	// Bound to the run: an interrupted run takes its redis-server with it.
	cmd := exec.CommandContext(ctx, bin, //nolint:gosec // G204: the redis-server on PATH, with the program's own arguments
		"--port", port, "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--loglevel", "warning", "--logfile", "redis.log", "--maxmemory", "2gb")
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("%w: %s", errRedisExited, strings.TrimSpace(string(log)))
		case <-ctx.Done():
			s.stop()
			return ctx.Err()
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		info, err := c.Info(pctx, "server").Result()
		cancel()
		if err == nil {
			s.version = infoField(info, "redis_version")
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("%w: %s did not answer within 10s", errRedisExited, s.addr)
}

// url is the REDIS_URL of the server.
func (s *redisServer) url() string { return "redis://" + s.addr + "/0" }

// stop kills the server and waits for it to exit.
func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// close stops the server and removes its directory.
func (s *redisServer) close() {
	s.stop()
	_ = os.RemoveAll(s.dir)
}

// flush empties the server between measurements, so every measurement starts from the same
// state whatever ran before it.
func (s *redisServer) flush(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	if err := c.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("flushall: %w", err)
	}
	return nil
}

// cpu is the server's CPU time so far (INFO cpu: used_cpu_user + used_cpu_sys).
func (s *redisServer) cpu(ctx context.Context, c *redis.Client) (time.Duration, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("info cpu: %w", err)
	}
	var total float64
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(infoField(info, f), 64)
		if err != nil {
			return 0, fmt.Errorf("info cpu %s: %w", f, err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// infoField reads one "name:value" line of an INFO reply.
func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errNotTCP
	}
	return addr.Port, nil
}
