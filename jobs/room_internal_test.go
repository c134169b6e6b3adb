package jobs

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestRoomSlots: attempts come due together, and the Room makes at most its slots of them at
// once; one still waiting for a slot when the Room closes is handed back, not made.
func TestRoomSlots(t *testing.T) {
	t.Parallel()
	r := newRoom(10, 2, time.Second)
	var running, most, made, abandoned atomic.Int64
	release := make(chan struct{})
	for range 5 {
		if !r.reserve() {
			t.Fatal("an empty room refused an attempt")
		}
		r.start(0, func(context.Context) {
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			made.Add(1)
		}, func(context.Context) { abandoned.Add(1) })
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a third to start, were the bound not kept
	if got := most.Load(); got != 2 {
		t.Fatalf("%d attempts made at once, want the 2 slots", got)
	}
	done := r.close()
	time.Sleep(50 * time.Millisecond) // the three waiting for a slot see the close
	close(release)
	<-done
	if made.Load() != 2 || abandoned.Load() != 3 {
		t.Errorf("made %d, handed back %d; want 2 and 3", made.Load(), abandoned.Load())
	}
	if r.reserve() {
		t.Error("a closed room took an attempt")
	}
}
