package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/internal/stacktest"
)

// bin is the linkhop binary the tests run, built once by TestMain.
var bin string

// TestMain builds the binary, runs the tests, and checks that they leave no goroutine
// behind: the API, the in-process worker and the test servers must all stop. Idle keep-alive
// connections and the go-redis pool's reaper outlive a test by design.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "linkhop-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "linkhop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building linkhop: %v\n%s", err, out)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		code = m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
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
	return s.st.Key(t, "cli-test", rateLimit, scopes...)
}

func ptr[T any](v T) *T { return &v }
