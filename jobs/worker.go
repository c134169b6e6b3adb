package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/resolve"
)

// WorkerOptions configure the asynq server of a worker process.
type WorkerOptions struct {
	Concurrency        int           // WORKER_CONCURRENCY
	ShutdownTimeout    time.Duration // SHUTDOWN_TIMEOUT: how long running tasks may finish
	ResolveBackoffBase time.Duration // RESOLVE_BACKOFF_BASE
	Logger             *slog.Logger
	// Queues maps queue names to priorities; nil means resolve only.
	Queues map[string]int
	// LeaseTTL is JOB_LEASE_TTL (zero: DefaultLeaseTTL), for the handlers given Leases().
	LeaseTTL time.Duration
}

// Worker runs linkhop's task handlers on asynq.
type Worker struct {
	srv       *asynq.Server
	mux       *asynq.ServeMux
	delays    map[string]asynq.RetryDelayFunc
	notFailed []func(error) bool
	leases    *Leases
	idle      *idleBackoff
	line      *Line
	room      *Room
	completes *TaskCompletions
	rdb       redis.UniversalClient
}

// NewWorker builds a worker on rdb; register handlers with Handle before Start. It adds two
// hooks to rdb: one slows asynq's polling while the worker is idle
// (docs/operations.md#an-idle-worker) and holds nothing once the worker has shut down; the
// other answers asynq's completion of the tasks its handlers completed themselves
// (Completions).
func NewWorker(rdb redis.UniversalClient, o WorkerOptions) *Worker {
	queues := o.Queues
	if queues == nil {
		queues = map[string]int{QueueResolve: 1}
	}
	// The idle back-off waits on every queue's list (in no particular order: the dequeue that
	// finds the last of them empty waits for all).
	var watch []string
	for _, q := range slices.Sorted(maps.Keys(queues)) {
		watch = append(watch, pendingKey(q))
	}
	w := &Worker{rdb: rdb, mux: asynq.NewServeMux(), delays: map[string]asynq.RetryDelayFunc{}, idle: newIdleBackoff(rdb, watch...)}
	rdb.AddHook(w.idle)
	w.completes = newTaskCompletions(rdb)
	rdb.AddHook(w.completes)
	w.leases = NewLeases(rdb, LeaseOptions{TTL: o.LeaseTTL, Logger: o.Logger})
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w.line = newLine(rdb, log.With("component", "webhook-line"), w.idle)
	w.room = newRoom(roomPerSlot*max(o.Concurrency, 1), max(o.Concurrency, 1), o.ShutdownTimeout)
	w.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:     max(o.Concurrency, 1),
		Queues:          queues,
		ShutdownTimeout: o.ShutdownTimeout,
		Logger:          slogAdapter{log.With("component", "asynq")},
		LogLevel:        asynq.InfoLevel,
		// Short polling intervals. asynq has one dispatch loop per server; whenever it finds
		// every queue empty it sleeps TaskCheckInterval/2 plus up to TaskCheckInterval, and a
		// job queued meanwhile waits for it. At 100 ms that wait dominated submit-to-done
		// latency (p50 ~95 ms against ~20 ms at 10 ms, docs/benchmarks.md); the price is one
		// dequeue script per queue every 5-15 ms while a worker is idle, a few hundred cheap
		// calls per second, which the idle back-off (w.idle) cuts to a few once the worker has
		// been idle for a while.
		// A retry is picked up within 100 ms of its time. That matters to webhooks held back
		// by their per-URL rate: with 1 s they would come back up to a second after their slot
		// freed, and a busy URL would get far fewer than WEBHOOK_RATE_PER_SECOND attempts. It
		// costs a few cheap Lua calls per queue per tick.
		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		RetryDelayFunc: func(n int, err error, t *asynq.Task) time.Duration {
			if IsLeaseExpired(err) {
				// asynq's recovery of a dead worker's task: usually replaced long ago by a
				// reaper, so the sooner it runs (and ends), the sooner it leaves the queue UI.
				return 0
			}
			if f, ok := w.delays[t.Type()]; ok {
				return f(n, err, t)
			}
			return asynq.DefaultRetryDelayFunc(n, err, t)
		},
		IsFailure: func(err error) bool {
			for _, f := range w.notFailed {
				if f(err) {
					return false
				}
			}
			return true
		},
	})
	w.delays[TypeResolve] = RetryDelay(o.ResolveBackoffBase)
	w.NotFailure(IsHeld)
	w.NotFailure(IsLeaseExpired)
	return w
}

// Leases are the job leases of this worker process, for its handlers (ResolveHandler.Leases,
// WebhookDeps.Leases) and their reapers (Leases.OnLapse). They beat while the worker runs.
func (w *Worker) Leases() *Leases { return w.leases }

// Completions are the tasks this worker's handlers complete in their last write, for
// ResolveHandler.Complete: asynq's own completion of each is then answered without Redis.
func (w *Worker) Completions() *TaskCompletions { return w.completes }

// Line forwards the held-back webhook attempts of every worker at their places in line, for
// WebhookDeps.Line; it runs while the worker runs.
func (w *Worker) Line() *Line { return w.line }

// Room keeps held-back webhook attempts in this process until their places in line, for
// WebhookDeps.Room: up to 100 per task slot (WORKER_CONCURRENCY).
func (w *Worker) Room() *Room { return w.room }

// Handle registers h for task type typ with its retry delay policy (nil: asynq's default).
func (w *Worker) Handle(typ string, h asynq.Handler, delay asynq.RetryDelayFunc) {
	w.mux.Handle(typ, h)
	if delay != nil {
		w.delays[typ] = delay
	}
}

// NotFailure registers a test for errors that reschedule a task without spending a retry
// (for example a webhook held back by its rate limit).
func (w *Worker) NotFailure(f func(error) bool) { w.notFailed = append(w.notFailed, f) }

// Start begins processing in the background, and the leases' beat with it: the first beat
// reaps at once what dead workers left.
func (w *Worker) Start() error {
	// Best effort: a script Redis does not know is sent again where a run meets NOSCRIPT.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = LoadScripts(ctx, w.rdb)
	cancel()
	if err := w.srv.Start(w.mux); err != nil {
		return err
	}
	w.leases.Start()
	w.line.start()
	return nil
}

// Shutdown stops fetching new tasks, waits up to ShutdownTimeout for running ones and puts
// the unfinished back in their queues, as it does the attempts waiting in its Room; then it
// removes the leases of the runs cut short (their tasks are back in the queue, and their next
// runs need not wait for the leases to lapse).
func (w *Worker) Shutdown() {
	w.idle.Stop() // a held poll would delay asynq's stop
	// The Room's waiting attempts go back to the queue while their leases hold; those being
	// made get the time asynq gives its runs, at the same time.
	roomDone := w.room.close()
	w.srv.Shutdown()
	w.idle.Drain() // blocking waits for work still in flight: at most a second
	<-roomDone
	w.line.shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w.leases.Stop(ctx)
}

// LoadScripts has Redis learn the scripts a worker's runs send by their SHA in their
// pipelines (the lease's take, the record's compare-and-set, a held-back attempt's parked
// lease, the upstream outcome's publication), so that the first runs do not each meet NOSCRIPT and send the script again on
// its own. Worker.Start calls it; Redis forgets its scripts when it restarts, and the runs
// then send each again where they meet NOSCRIPT.
func LoadScripts(ctx context.Context, rdb redis.Scripter) error {
	for _, s := range []*redis.Script{takeScript, casScript, casDoneScript, parkDoneScript} {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("jobs: loading scripts: %w", err)
		}
	}
	return resolve.LoadScripts(ctx, rdb)
}

// slogAdapter lets asynq log through slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a slogAdapter) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a slogAdapter) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a slogAdapter) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a slogAdapter) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...))
	os.Exit(1)
}
