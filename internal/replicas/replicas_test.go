package replicas_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/internal/replicas"
)

func TestMarker(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"linkhop:{k:abc}:job:1":   "linkhop:{k:abc}:replicated",
		"asynq:{resolve}:pending": "linkhop:{resolve}:replicated",
		"linkhop:keys":            "linkhop:{linkhop:keys}:replicated",
		"a{}b":                    "linkhop:{a{}b}:replicated",
	} {
		if got := replicas.Marker(key); got != want {
			t.Errorf("Marker(%q) = %q, want %q", key, got, want)
		}
	}
}

// primaryWithReplica starts a primary and one replica in sync with it.
func primaryWithReplica(t *testing.T) (primary *redis.Client, replica *redistest.Node) {
	p, r := redistest.PrimaryWithReplica(t)
	return p.Client(redis.Options{}), r
}

func TestWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, replica := primaryWithReplica(t)
	if err := (replicas.Ack{}).Wait(ctx, c, "x"); err != nil {
		t.Fatalf("off: %v", err)
	}
	one := replicas.Ack{Min: 1, Timeout: 300 * time.Millisecond}
	c.Set(ctx, "linkhop:{k:a}:job:1", "v", 0)
	if err := one.Wait(ctx, c, "linkhop:{k:a}:job:1"); err != nil {
		t.Fatalf("one replica of one: %v", err)
	}
	start := time.Now()
	err := replicas.Ack{Min: 2, Timeout: 300 * time.Millisecond}.Wait(ctx, c, "linkhop:{k:a}:job:1")
	if !errors.Is(err, replicas.ErrTooFew) {
		t.Fatalf("two replicas of one: %v, want ErrTooFew", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("the wait took %v, want about the timeout (300ms)", d)
	}
	// A replica that does not answer (stopped) does not acknowledge.
	replica.Signal(syscall.SIGSTOP)
	defer replica.Signal(syscall.SIGCONT)
	if err := one.Wait(ctx, c, "linkhop:{k:a}:job:1"); !errors.Is(err, replicas.ErrTooFew) {
		t.Fatalf("a stopped replica: %v, want ErrTooFew", err)
	}
	// An unreachable primary is another error.
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	if err := one.Wait(ctx, dead, "x"); err == nil || errors.Is(err, replicas.ErrTooFew) {
		t.Errorf("unreachable primary: %v", err)
	}
}

// TestWaitCluster: on Cluster, each primary that owns one of the keys is waited for, and a
// primary whose replica is stopped fails the wait even when the other's acknowledges.
func TestWaitCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prim, repl := redistest.Cluster(t, 2, 1, redis.Options{}, "cluster-node-timeout 5000")
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{prim[0].Addr, prim[1].Addr}})
	defer cc.Close()
	// Two keys on two different primaries.
	var a, b string
	for _, k := range []string{"{a}", "{b}", "{c}", "{d}", "{e}", "{f}"} {
		n, err := cc.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		switch n.Options().Addr {
		case prim[0].Addr:
			a = k
		case prim[1].Addr:
			b = k
		}
	}
	if a == "" || b == "" {
		t.Fatal("no keys on both primaries")
	}
	one := replicas.Ack{Min: 1, Timeout: 300 * time.Millisecond}
	if err := one.Wait(ctx, cc, a, b); err != nil {
		t.Fatalf("both replicas up: %v", err)
	}
	repl[1].Signal(syscall.SIGSTOP) // the replica of prim[1]
	defer repl[1].Signal(syscall.SIGCONT)
	if err := one.Wait(ctx, cc, a); err != nil {
		t.Errorf("the other primary's replica is up: %v", err)
	}
	if err := one.Wait(ctx, cc, a, b); !errors.Is(err, replicas.ErrTooFew) {
		t.Errorf("one replica stopped: %v, want ErrTooFew", err)
	}
}
