package sandbox

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no run leaves a goroutine behind: the budget timer and the context
// watch must be stopped however a page ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// regexp2 keeps a clock goroutine for about a second after the last timed match
		// (see regexpTimeout); it stops by itself.
		goleak.IgnoreAnyFunction("github.com/dlclark/regexp2/v2.runClock"),
	)
}
