package app

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
)

// WorkerMetrics are the worker's job collectors (namespace linkhop).
type WorkerMetrics struct {
	jobs     *prometheus.HistogramVec
	hops     prometheus.Histogram
	outcomes *prometheus.CounterVec
}

// NewWorkerMetrics registers the worker's job collectors on reg.
func NewWorkerMetrics(reg prometheus.Registerer) *WorkerMetrics {
	m := &WorkerMetrics{
		jobs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "linkhop", Subsystem: "jobs", Name: "duration_seconds",
			Help:    "Time from a resolve task's (last) start to its job's terminal state, by status and provider.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10),
		}, []string{"status", "provider"}),
		hops: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "linkhop", Subsystem: "resolve", Name: "hops",
			Help: "Hops recorded per finished job.", Buckets: prometheus.LinearBuckets(1, 1, 20),
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "linkhop", Subsystem: "jobs", Name: "finished_total",
			Help: "Finished jobs by status, error code and provider.",
		}, []string{"status", "error", "provider"}),
	}
	reg.MustRegister(m.jobs, m.hops, m.outcomes)
	return m
}

// Observe records a finished job. The provider label is bounded by the provider registry;
// links resolved in any-host mode have none and count as "none".
func (m *WorkerMetrics) Observe(r jobs.Record, d time.Duration) {
	code, provider := "", r.Provider
	if r.Error != nil {
		code = *r.Error
	}
	if provider == "" {
		provider = "none"
	}
	m.jobs.WithLabelValues(string(r.Status), provider).Observe(d.Seconds())
	m.hops.Observe(float64(len(r.Hops)))
	m.outcomes.WithLabelValues(string(r.Status), code, provider).Inc()
}

// NewWorker assembles the worker: the asynq server with every task handler registered.
func NewWorker(c config.Config, rdb redis.UniversalClient, log *slog.Logger, svc *resolve.Service, reg prometheus.Registerer) (*jobs.Worker, error) {
	store := jobs.NewStore(rdb, c.JobRetention)
	m := NewWorkerMetrics(reg)
	w := jobs.NewWorker(rdb, jobs.WorkerOptions{
		Concurrency: c.WorkerConcurrency, ShutdownTimeout: c.ShutdownTimeout,
		ResolveBackoffBase: c.ResolveBackoffBase, Logger: log,
		Queues:   map[string]int{jobs.QueueResolve: 1, jobs.QueueWebhooks: 1},
		LeaseTTL: c.JobLeaseTTL,
	})
	wh, err := newWebhookHandler(c, rdb, log, reg, w)
	if err != nil {
		return nil, err
	}
	w.Handle(jobs.TypeWebhook, jobs.Replicated(wh, rdb, ReplicaAck(c)), jobs.WebhookRetryDelay)
	w.NotFailure(jobs.IsWebhookDeferred)
	rh := &jobs.ResolveHandler{
		Store: store, Resolver: svc, Logger: log, Observe: m.Observe, MaxAttempts: c.ResolveMaxAttempts,
		OnTerminal: wh.OnTerminal, Leases: w.Leases(),
		Tasks: jobs.TaskOptions{MaxAttempts: c.ResolveMaxAttempts, Timeout: c.ResolveTimeout},
	}
	rh.Complete = TaskCompletions(c, w)
	w.Handle(jobs.TypeResolve, jobs.Replicated(rh, rdb, ReplicaAck(c)), nil)
	w.Leases().OnLapse(jobs.LeaseResolve, rh.Reap)
	w.Leases().OnLapse(jobs.LeaseWebhook, wh.Reap)
	return w, nil
}

// TaskCompletions is what the handlers of worker w are given to complete their tasks in their
// last write (ResolveHandler.Complete, WebhookDeps.Complete;
// docs/operations.md#a-job-in-three-round-trips): nil with REDIS_MIN_REPLICAS_ACK on, whose
// wait for the replicas follows a run (jobs.Replicated) and may fail it, so asynq must keep the
// task to retry.
func TaskCompletions(c config.Config, w *jobs.Worker) *jobs.TaskCompletions {
	if w == nil || ReplicaAck(c).On() {
		return nil
	}
	return w.Completions()
}
