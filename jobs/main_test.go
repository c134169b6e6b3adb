package jobs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: workers, receivers and
// Redis clients must all be shut down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
