package main

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// spin burns about d of CPU on the calling goroutine.
func spin(d time.Duration) {
	x := 0
	for t0 := time.Now(); time.Since(t0) < d; {
		for i := range 1000 {
			x += i
		}
	}
	_ = x
}

// measuredShare measures s like a scenario's round and returns the load generator's share of
// the process's CPU, or skips when the profiler saw too little to tell (a starved machine).
func measuredShare(t *testing.T, s side) (sample, float64) {
	t.Helper()
	out, err := timing{}.measured(context.Background(), s, 500*time.Millisecond, "")
	if err != nil {
		t.Fatal(err)
	}
	if out.errs > 0 {
		t.Fatalf("%d operations failed, first: %v", out.errs, out.firstErr)
	}
	total := out.goCPU + out.loadCPU
	if total < 100*time.Millisecond {
		t.Skipf("only %s of CPU in the span: too little to split", total)
	}
	f := float64(out.loadCPU) / float64(total)
	t.Logf("server %s, load generator %s: load share %.2f", out.goCPU, out.loadCPU, f)
	return out, f
}

// TestSplitBusyLoops is the split's self-check: CPU burnt on the load generator's goroutines
// lands in its share, CPU burnt elsewhere does not.
func TestSplitBusyLoops(t *testing.T) {
	t.Run("load generator", func(t *testing.T) {
		out, f := measuredShare(t, func(ctx context.Context, d time.Duration) sample {
			return loadLoop(ctx, 2, d, func(context.Context, int) error { spin(time.Millisecond); return nil })
		})
		if !out.split || f < 0.8 {
			t.Errorf("a busy load generator: split %v, load share %.2f, want most", out.split, f)
		}
	})
	t.Run("measured code", func(t *testing.T) {
		out, f := measuredShare(t, func(ctx context.Context, d time.Duration) sample {
			return closedLoop(ctx, 2, d, func(context.Context, int) error { spin(time.Millisecond); return nil })
		})
		if out.split && f > 0.2 {
			t.Errorf("busy measured code: load share %.2f, want next to none", f)
		}
	})
}

// TestSplitHTTP checks the split across a real loopback HTTP exchange: a server's handler
// burning CPU lands in the server's share, a client burning CPU around its requests in the
// load generator's.
func TestSplitHTTP(t *testing.T) {
	for _, tc := range []struct {
		name           string
		server, client time.Duration
		wantLoad       bool
	}{
		{"busy server", 2 * time.Millisecond, 0, false},
		{"busy client", 0, 2 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				spin(tc.server)
				_, _ = w.Write([]byte("{}"))
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.close()
			c := newLoadClient(2)
			defer c.CloseIdleConnections()
			// A first request from an unlabelled goroutine opens a connection: the transport
			// must still count that connection's goroutines as the load generator's.
			if err := get(context.Background(), c, srv.url+"/", ""); err != nil {
				t.Fatal(err)
			}
			out, f := measuredShare(t, func(ctx context.Context, d time.Duration) sample {
				return loadLoop(ctx, 2, d, func(ctx context.Context, _ int) error {
					spin(tc.client)
					return get(ctx, c, srv.url+"/", "")
				})
			})
			// A busy server's client may use too little CPU for the profiler to catch a sample
			// of it (then nothing is split off, a share of 0); a busy client's must be seen.
			if tc.wantLoad && !out.split {
				t.Fatal("no load generator's CPU seen")
			}
			if tc.wantLoad && f < 0.6 || !tc.wantLoad && f > 0.4 {
				t.Errorf("load share %.2f (server %s, load generator %s), want %s", f, out.goCPU, out.loadCPU,
					map[bool]string{true: "most", false: "little"}[tc.wantLoad])
			}
		})
	}
}
