package client_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/internal/stacktest"
)

// TestMain checks that the tests leave no goroutine behind: the API, the in-process worker
// and the test servers must all stop. Idle keep-alive connections and the go-redis pool's
// reaper outlive a test by design.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// stack is a linkhop API and worker on their own real Redis (internal/stacktest).
type stack struct {
	redis *redistest.Server
	url   string
	st    *stacktest.Stack
}

func newStack(t *testing.T, redisArgs ...string) *stack {
	t.Helper()
	st := stacktest.New(t, redisArgs...)
	return &stack{redis: st.Redis, url: st.URL, st: st}
}

// key creates an API key and returns its token. rateLimit nil is the default of 60 per
// minute.
func (s *stack) key(t *testing.T, rateLimit *int, scopes ...string) string {
	t.Helper()
	return s.st.Key(t, "client-test", rateLimit, scopes...)
}

func ptr[T any](v T) *T { return &v }
