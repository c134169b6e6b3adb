package redistest

import (
	"context"
	"testing"
)

func TestNewIsolated(t *testing.T) {
	t.Parallel()
	a, b := New(t), New(t)
	ctx := context.Background()
	if err := a.Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n := b.Exists(ctx, "k").Val(); n != 0 {
		t.Fatalf("servers share data: exists=%d", n)
	}
}

func TestRestartKeepsAOF(t *testing.T) {
	t.Parallel()
	s := Start(t, "--appendonly", "yes", "--appendfsync", "always")
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(0); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("after restart got %q, want v", got)
	}
}

// TestLaunchRefusesAnotherServersPort: a launch on a port that another redis-server already
// serves fails (onFreePort then tries another port), rather than taking that server for its
// own while its own process fails to bind.
func TestLaunchRefusesAnotherServersPort(t *testing.T) {
	t.Parallel()
	a := Start(t)
	b := &Server{Addr: a.Addr, dir: t.TempDir(), tb: t}
	if err := b.launch(); err == nil {
		b.Stop()
		t.Fatal("launched on a port another redis-server serves")
	}
	if b.cmd != nil {
		t.Fatal("the failed launch kept a process")
	}
	if err := a.Client(t).Ping(context.Background()).Err(); err != nil {
		t.Fatalf("the first server: %v", err)
	}
}
