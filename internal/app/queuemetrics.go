package app

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/jobs"
)

// queueCollector reports asynq's queues from Redis at every scrape (docs/operations.md#metrics).
// It replaces asynq's x/metrics collector, whose gauges end in _total (promlint refuses them)
// and which logs plain text into the JSON log stream on every scrape while Redis is down.
type queueCollector struct {
	rdb                                                     redis.UniversalClient
	inspector                                               *asynq.Inspector
	size, tasks, latency, memory, processed, failed, paused *prometheus.Desc
	scrapeErrors                                            prometheus.Counter
}

func newQueueCollector(rdb redis.UniversalClient) *queueCollector {
	q := []string{"queue"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("linkhop_asynq_"+name, help, labels, nil)
	}
	return &queueCollector{
		rdb:       rdb,
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		size:      d("queue_size", "Tasks in the queue, in every state.", q),
		tasks:     d("tasks", "Tasks in the queue by state (pending, active, scheduled, retry, archived, completed, aggregating).", []string{"queue", "state"}),
		latency:   d("queue_latency_seconds", "Age of the queue's oldest pending task.", q),
		memory:    d("queue_memory_usage_approx_bytes", "Approximate Redis memory of the queue (sampled).", q),
		processed: d("tasks_processed_total", "Tasks processed (succeeded or failed), as asynq counts them in Redis.", q),
		failed:    d("tasks_failed_total", "Tasks whose processing failed, as asynq counts them in Redis.", q),
		paused:    d("queue_paused", "1 when the queue is paused.", q),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "asynq", Name: "scrape_errors_total",
			Help: "Scrapes whose queue figures could not be read from Redis (the queue series are missing from those scrapes).",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.tasks, c.latency, c.memory, c.processed, c.failed, c.paused} {
		ch <- d
	}
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector. A Redis failure is counted, not logged: the
// readiness probe and the API's 503s already say Redis is down.
func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	defer c.scrapeErrors.Collect(ch)
	// linkhop's queues are listed even when asynq's set of queues lost their names (a
	// failover): jobs.PublishQueues.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := jobs.PublishQueues(ctx, c.rdb); err != nil {
		c.scrapeErrors.Inc()
		return
	}
	queues, err := c.inspector.Queues()
	if err != nil {
		c.scrapeErrors.Inc()
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, q := range queues {
		info, err := c.inspector.GetQueueInfo(q)
		if err != nil {
			c.scrapeErrors.Inc()
			continue
		}
		gauge(c.size, float64(info.Size), q)
		for state, n := range map[string]int{
			"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled, "retry": info.Retry,
			"archived": info.Archived, "completed": info.Completed, "aggregating": info.Aggregating,
		} {
			gauge(c.tasks, float64(n), q, state)
		}
		gauge(c.latency, info.Latency.Seconds(), q)
		gauge(c.memory, float64(info.MemoryUsage), q)
		ch <- prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(info.ProcessedTotal), q)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(info.FailedTotal), q)
		p := 0.0
		if info.Paused {
			p = 1
		}
		gauge(c.paused, p, q)
	}
}
