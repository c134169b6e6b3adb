package app_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
)

// TestQueueMetrics: asynq's collector reports the queues in Redis under linkhop_asynq_*.
func TestQueueMetrics(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	reg := prometheus.NewRegistry()
	app.RegisterQueueMetrics(reg, rdb)

	c := asynq.NewClientFromRedisClient(rdb)
	for range 2 {
		if _, err := c.Enqueue(asynq.NewTask("test:task", nil), asynq.Queue("resolve")); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range families {
		got[f.GetName()] = f
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := got[name]
		if f == nil {
			t.Fatalf("no %s among %d families", name, len(got))
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metrics
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
		t.Fatalf("%s has no series %v", name, labels)
		return 0
	}
	if v := value("linkhop_asynq_queue_size", map[string]string{"queue": "resolve"}); v != 2 {
		t.Errorf("queue size %v, want 2", v)
	}
	if v := value("linkhop_asynq_tasks", map[string]string{"queue": "resolve", "state": "pending"}); v != 2 {
		t.Errorf("pending %v, want 2", v)
	}
	if v := value("linkhop_asynq_queue_latency_seconds", map[string]string{"queue": "resolve"}); v < 0 {
		t.Errorf("latency %v", v)
	}
}

// TestQueueMetricsAfterLostQueueNames: asynq lists a queue only while its name is in asynq's
// set of queues, which a process writes once; a failover can lose that write. linkhop's
// queues are reported even then, their tasks counted.
func TestQueueMetricsAfterLostQueueNames(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	reg := prometheus.NewRegistry()
	app.RegisterQueueMetrics(reg, rdb)
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("test:task", nil), asynq.Queue(jobs.QueueResolve)); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(context.Background(), "asynq:queues").Err(); err != nil { // as a failover that lost the write
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "linkhop_asynq_queue_size" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "queue" {
					sizes[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	if sizes[jobs.QueueResolve] != 1 {
		t.Errorf("resolve queue size %v (all: %v), want 1", sizes[jobs.QueueResolve], sizes)
	}
	if _, ok := sizes[jobs.QueueWebhooks]; !ok {
		t.Errorf("no series for the webhooks queue: %v", sizes)
	}
}
