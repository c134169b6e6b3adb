package main

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
)

// TestIdleAsynqCountsNoRoundTrip: an asynq server without work makes only idle polls and timed
// calls (heartbeat, recoverer, forwarder, janitor), and a worker's start loads its scripts, so
// a worker's count of round trips per job (rows 4c and 5c) takes none of them.
func TestIdleAsynqCountsNoRoundTrip(t *testing.T) {
	rdb := redistest.New(t)
	trips := &tripCounter{worker: true}
	rdb.AddHook(trips)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 2,
		Queues:      map[string]int{jobs.QueueResolve: 1, jobs.QueueWebhooks: 1},
		// Each timed loop runs within the test (in production they run every few seconds).
		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		JanitorInterval:          50 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	// The first run of each script is refused (NOSCRIPT) and sent again: a warm-up.
	time.Sleep(300 * time.Millisecond)
	trips.takeAll()
	if err := jobs.LoadScripts(context.Background(), rdb); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	n, idle, background := trips.takeAll()
	if n != 0 {
		t.Errorf("%d round trips counted while idle (%d idle polls, %d timed calls), want 0", n, idle, background)
	}
	if idle == 0 || background == 0 {
		t.Errorf("%d idle polls and %d timed calls, want some of each", idle, background)
	}
}
