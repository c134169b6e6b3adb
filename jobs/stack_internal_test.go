package jobs

import (
	"runtime"
	"sync"
	"testing"
)

// TestGrowStackGrowsTheStack holds growStack to what the task handlers call it for: each
// goroutine that calls it holds a stack at least handlerFrame larger than one that does not.
// It fails if the compiler ever drops the frame (an array it can prove unused), which would
// leave the handlers growing their stacks deep in each task again.
func TestGrowStackGrowsTheStack(t *testing.T) {
	const n = 64
	// stacks is the memory in goroutine stacks that n goroutines hold while they wait.
	stacks := func(grow bool) int64 {
		release := make(chan struct{})
		var ready, done sync.WaitGroup
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range n {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				if grow {
					growStack()
				}
				ready.Done()
				<-release
			}()
		}
		ready.Wait()
		runtime.ReadMemStats(&after)
		close(release)
		done.Wait()
		return int64(after.StackInuse) - int64(before.StackInuse)
	}
	for range 3 {
		plain, grown := stacks(false), stacks(true)
		if grown-plain >= n*handlerFrame {
			return
		}
		t.Logf("stacks of %d goroutines: %d bytes more with growStack than without (%d and %d)", n, grown-plain, grown, plain)
	}
	t.Fatalf("growStack did not grow the stacks of %d goroutines by %d bytes each", n, handlerFrame)
}
