package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the tests leave no goroutine behind: the asynq server and the ops
// listener run starts must stop with it. Idle keep-alive connections of the tests' HTTP
// clients and the go-redis pool's reaper outlive a test by design, and so does the pool's
// redial probe after a failed dial (a test stops Redis under the running worker, whose lease
// beat keeps trying it): it sleeps a second between probes and ends at the first one after
// the client is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}
