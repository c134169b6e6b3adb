package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Node is a redis-server (or Sentinel) started from a configuration file, for topologies
// with replicas, sentinels, passwords and TLS. Unlike Start, it does not need a plain
// connection to know the server is up: it waits for the server's own log line.
type Node struct {
	Addr     string // host:port, the TLS port when the server serves TLS only
	Dir      string
	conf     string
	sentinel bool
	tb       testing.TB
	cmd      *exec.Cmd
	done     chan struct{}
}

// StartNode starts redis-server on a free loopback port with the configuration lines conf
// (for example "requirepass secret", "replicaof 127.0.0.1 7000"); a line containing
// {port} gets the port (use it for "tls-port {port}" with "port 0"). sentinel starts it
// with --sentinel. It is killed at tb's cleanup.
func StartNode(tb testing.TB, sentinel bool, conf ...string) *Node {
	tb.Helper()
	n := &Node{Dir: tb.TempDir(), tb: tb, sentinel: sentinel}
	onFreePort(tb, func(port int) error {
		n.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		lines := []string{"bind 127.0.0.1", "dir " + n.Dir, "logfile redis.log", "loglevel notice",
			"save \"\"", "appendonly no", "daemonize no"}
		tlsOnly := false
		for _, l := range conf {
			if strings.Contains(l, "{port}") {
				tlsOnly = true
			}
			lines = append(lines, strings.ReplaceAll(l, "{port}", strconv.Itoa(port)))
		}
		if !tlsOnly {
			lines = append([]string{"port " + strconv.Itoa(port)}, lines...)
		}
		n.conf = filepath.Join(n.Dir, "redis.conf")
		if err := os.WriteFile(n.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		return n.launch()
	})
	tb.Cleanup(n.Kill)
	return n
}

func (n *Node) launch() error {
	_ = os.Remove(filepath.Join(n.Dir, "redis.log"))
	args := []string{n.conf}
	sentinel := n.sentinel
	if sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Dir = n.Dir
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	ready := "Ready to accept connections"
	if sentinel {
		ready = "+monitor master" // a sentinel logs no "ready"; it serves once it monitors
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("redis-server exited: %s", n.Log())
		default:
		}
		if strings.Contains(n.Log(), ready) {
			n.cmd, n.done = cmd, done
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	return fmt.Errorf("redis-server on %s was not ready within 10s: %s", n.Addr, n.Log())
}

// Log is the server's log so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "redis.log"))
	return string(b)
}

// Kill ends the server at once (SIGKILL), as a crash would. It is safe to call twice.
func (n *Node) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// Restart starts a killed node again, on its address, with its configuration and directory
// (a Cluster node finds its nodes.conf there and rejoins).
func (n *Node) Restart() {
	n.tb.Helper()
	if n.cmd != nil {
		n.tb.Fatalf("redistest: %s is running", n.Addr)
	}
	if err := n.launch(); err != nil {
		n.tb.Fatal(err)
	}
}

// Signal sends sig (SIGSTOP, SIGCONT) to the server.
func (n *Node) Signal(sig syscall.Signal) {
	n.tb.Helper()
	if n.cmd == nil {
		n.tb.Fatalf("redistest: %s is not running", n.Addr)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.tb.Fatal(err)
	}
}

// Client is a plain client of the node with opts' credentials and TLS (Addr is filled in),
// closed at cleanup.
func (n *Node) Client(opts redis.Options) *redis.Client {
	opts.Addr = n.Addr
	c := redis.NewClient(&opts)
	n.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Sentinels starts count sentinels watching primary (host:port) as master name, with
// quorum 2 (1 for a single sentinel), down-after-milliseconds downAfter, and the extra
// configuration lines conf (for example "sentinel auth-pass NAME secret", "requirepass
// x"). It returns them once every one knows the primary.
func Sentinels(tb testing.TB, count int, name, primary string, downAfter time.Duration, conf ...string) []*Node {
	tb.Helper()
	host, port, _ := net.SplitHostPort(primary)
	quorum := min(2, count)
	lines := append([]string{
		fmt.Sprintf("sentinel monitor %s %s %s %d", name, host, port, quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", name, downAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", name, 3*downAfter.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s 1", name),
	}, conf...)
	var out []*Node
	for range count {
		out = append(out, StartNode(tb, true, lines...))
	}
	return out
}

// SentinelAddrs joins the addresses of sentinels with commas, as a redis-sentinel:// URL
// names them.
func SentinelAddrs(sentinels []*Node) string {
	addrs := make([]string, len(sentinels))
	for i, s := range sentinels {
		addrs[i] = s.Addr
	}
	return strings.Join(addrs, ",")
}

// Cluster starts a Redis Cluster of primaries primaries, each with replicasEach replicas,
// every node with the configuration lines conf plus the cluster's own ("cluster-node-timeout
// 1000" and the like may be among conf). auth, when it has a password, is what the test
// uses to talk to the nodes (conf must then carry "requirepass" and "masterauth"). It
// returns the primaries and the replicas (replicas[i] replicate primaries[i/replicasEach])
// once the cluster is ok on every node and every replica is in sync.
func Cluster(tb testing.TB, primaries, replicasEach int, auth redis.Options, conf ...string) (prim, repl []*Node) {
	tb.Helper()
	ctx := context.Background()
	start := func() *Node {
		bus, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		// An explicit bus port: the default, port+10000, may be taken or out of range.
		return StartNode(tb, false, append([]string{"cluster-enabled yes", "cluster-config-file nodes.conf",
			"cluster-port " + strconv.Itoa(bus)}, conf...)...)
	}
	for range primaries {
		prim = append(prim, start())
	}
	for range primaries * replicasEach {
		repl = append(repl, start())
	}
	all := append(append([]*Node{}, prim...), repl...)
	cl := map[*Node]*redis.Client{}
	for _, n := range all {
		cl[n] = n.Client(auth)
	}
	first := cl[prim[0]]
	for i, n := range prim {
		lo, hi := i*16384/primaries, (i+1)*16384/primaries-1
		if err := cl[n].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			tb.Fatalf("ADDSLOTSRANGE on %s: %v", n.Addr, err)
		}
	}
	for _, n := range append(prim[1:], repl...) {
		host, port, _ := net.SplitHostPort(n.Addr)
		bus := busPort(tb, cl[n])
		if err := first.Do(ctx, "CLUSTER", "MEET", host, port, bus).Err(); err != nil {
			tb.Fatal(err)
		}
	}
	waitUntil(tb, "every node to know every other", func() bool {
		for _, n := range all {
			info, err := cl[n].ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d\r", len(all))) {
				return false
			}
		}
		return true
	})
	for i, r := range repl {
		id, err := cl[prim[i/replicasEach]].Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			tb.Fatal(err)
		}
		if err := cl[r].Do(ctx, "CLUSTER", "REPLICATE", id).Err(); err != nil {
			tb.Fatalf("CLUSTER REPLICATE on %s: %v", r.Addr, err)
		}
	}
	waitUntil(tb, "cluster_state:ok and every replica in sync", func() bool {
		for _, n := range all {
			info, err := cl[n].ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		for _, r := range repl {
			info, err := cl[r].Info(ctx, "replication").Result()
			if err != nil || !strings.Contains(info, "master_link_status:up") {
				return false
			}
		}
		return true
	})
	return prim, repl
}

// ClusterClient is a client of the Redis Cluster whose primaries are nodes, closed when the
// test ends.
func ClusterClient(tb testing.TB, nodes []*Node) *redis.ClusterClient {
	tb.Helper()
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// busPort reads the cluster bus port of n from its configuration.
func busPort(tb testing.TB, c *redis.Client) int {
	v, err := c.ConfigGet(context.Background(), "cluster-port").Result()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := strconv.Atoi(v["cluster-port"])
	if err != nil {
		tb.Fatalf("cluster-port of %s: %q", c.Options().Addr, v["cluster-port"])
	}
	return p
}

// ReplicationOffset is master_repl_offset of INFO replication of c.
func ReplicationOffset(ctx context.Context, c *redis.Client) (int64, error) {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "master_repl_offset:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no master_repl_offset in INFO replication")
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("redistest: timed out waiting for %s", what)
}

// PrimaryWithReplica starts a primary (with the configuration lines conf) and one replica of
// it (with the same lines), and returns them once the replica is in sync.
func PrimaryWithReplica(tb testing.TB, conf ...string) (primary, replica *Node) {
	tb.Helper()
	primary = StartNode(tb, false, conf...)
	host, port, _ := net.SplitHostPort(primary.Addr)
	replica = StartNode(tb, false, append([]string{"replicaof " + host + " " + port}, conf...)...)
	c := redis.NewClient(&redis.Options{Addr: primary.Addr})
	defer c.Close()
	ctx := context.Background()
	waitUntil(tb, "the replica to come in sync", func() bool {
		c.Set(ctx, "redistest:sync", "1", time.Second)
		return c.Do(ctx, "WAIT", 1, 100).Val() == int64(1)
	})
	return primary, replica
}
