// Package faults holds linkhop's fault-injection tests and the proofs of the shutdown
// order (docs/reliability.md#graceful-shutdown). They build the real api and worker binaries
// once per test process, run them as child processes against a real redis-server on a free loopback port, and then break
// things: SIGKILL a worker mid-resolve, SIGTERM the API under load, restart Redis, and check
// that every accepted job still ends in a visible terminal state.
//
// The tests are slow (the SIGKILL recovery alone waits for asynq's lease to expire), so they
// carry the build tag faults and run with `make test-faults`; the five-minute soak carries
// the tags faults and soak and runs with `make soak`. docs/reliability.md lists every fault,
// what was observed, and which deliberately broken build each test was seen to fail against.
package faults
