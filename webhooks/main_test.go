package webhooks

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: senders, httptest
// receivers and Redis clients must all be shut down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
