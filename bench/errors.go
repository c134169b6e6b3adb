package main

import "errors"

// errNoRedisServer means redis-server is not installed; every scenario needs a real one.
var errNoRedisServer = errors.New("redis-server is not on PATH")

// errRedisExited means the benchmark's redis-server died or never answered.
var errRedisExited = errors.New("redis-server exited")

// errNotTCP is returned when a listener has a non-TCP address (never on loopback TCP).
var errNotTCP = errors.New("listener address is not TCP")

// errStatus is an HTTP answer other than the one a scenario's request must get; the load loops
// count it as a failed operation so a broken service cannot look fast.
var errStatus = errors.New("unexpected HTTP status")

// errJobFailed is a benchmark job that ended in a state other than done.
var errJobFailed = errors.New("job did not end done")

// errUnknownScenario is a -only value naming no scenario.
var errUnknownScenario = errors.New("unknown scenario")
