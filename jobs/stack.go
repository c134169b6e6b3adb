package jobs

import "sync/atomic"

// handlerFrame is the stack frame growStack takes. asynq runs each task on a goroutine of its
// own, which starts with a small stack (2 KiB, typically); a resolve or a webhook attempt then
// reaches 8–16 KiB deep (its own frames, go-redis's pipeline, net/http's client), and the
// runtime grew the stack up to three times on the way, each time copying every frame already
// on it, deep in the call: 2.6–3.7 % of the CPU of the end-to-end benchmark's process, API
// and load included (docs/benchmarks.md#a-tasks-stack-grown-once).
// An 8 KiB frame at the top grows the stack once, to 16 KiB (the largest size the runtime
// keeps in its per-processor cache), while only a few frames are there to copy.
const handlerFrame = 8 << 10

// frameAt is read by growStack as the index into its frame: a value the compiler cannot know,
// so it keeps (and zeroes) the whole array.
var frameAt atomic.Int32

// growStack grows the calling goroutine's stack by at least handlerFrame bytes in one step.
// A task handler calls it first, from a frame of its own that is small (ProcessTask's body is
// a function of its own), so the one copy it causes is cheap.
//
//go:noinline
func growStack() byte {
	var frame [handlerFrame]byte
	return frame[frameAt.Load()]
}
