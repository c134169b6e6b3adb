package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/redistest"
)

// TestQueueMetricsOnWorker: the worker's /metrics carries asynq's queue sizes as
// linkhop_asynq_*.
func TestQueueMetricsOnWorker(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cfg, err := config.Load(config.Worker, func(n string) (string, bool) {
		v, ok := map[string]string{"REDIS_URL": srv.URL(), "HTTP_ADDR": "127.0.0.1:0", "SHUTDOWN_TIMEOUT": "2s"}[n]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	// A queue no handler serves, so the task stays pending.
	if _, err := asynq.NewClientFromRedisClient(srv.Client(t)).Enqueue(asynq.NewTask("test:task", nil), asynq.Queue("metricsq")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addr <- a }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not start")
	}
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(b), `linkhop_asynq_queue_size{queue="metricsq"} 1`) {
		t.Fatalf("/metrics: %d, no linkhop_asynq_queue_size for metricsq:\n%.2000s", res.StatusCode, b)
	}
	for _, want := range []string{`linkhop_asynq_tasks{queue="metricsq",state="pending"} 1`, "linkhop_build_info{"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	problems, err := promlint.New(bytes.NewReader(b)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
