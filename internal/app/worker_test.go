package app_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/jobs"
)

// TestTaskCompletions: a worker's handlers complete their tasks in their last write, and its
// held-back webhook attempts wait in the worker, unless REDIS_MIN_REPLICAS_ACK is on, whose
// wait for the replicas follows a run and may fail it.
func TestTaskCompletions(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	w := jobs.NewWorker(rdb, jobs.WorkerOptions{})
	for _, tc := range []struct {
		ack  string
		want *jobs.TaskCompletions
	}{{"", w.Completions()}, {"0", w.Completions()}, {"1", nil}} {
		env := map[string]string{"REDIS_MIN_REPLICAS_ACK": tc.ack}
		c, err := config.Load(config.Worker, func(k string) (string, bool) { v, ok := env[k]; return v, ok && v != "" })
		if err != nil {
			t.Fatal(err)
		}
		if got := app.TaskCompletions(c, w); got != tc.want {
			t.Errorf("REDIS_MIN_REPLICAS_ACK=%q: completions %p, want %p", tc.ack, got, tc.want)
		}
		// Held-back webhook attempts wait in the worker under the same condition.
		if got, want := app.WebhookRoom(c, w), w.Room(); (got == want) != (tc.want != nil) {
			t.Errorf("REDIS_MIN_REPLICAS_ACK=%q: webhook room %p (the worker's %p)", tc.ack, got, want)
		}
	}
	if w.Completions() == nil || app.TaskCompletions(config.Config{}, nil) != nil {
		t.Error("a worker without completions, or completions without a worker")
	}
	if w.Room() == nil || app.WebhookRoom(config.Config{}, nil) != nil {
		t.Error("a worker without a webhook room, or a room without a worker")
	}
}
