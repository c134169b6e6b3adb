package jobs

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/internal/redistest"
)

// BenchmarkBusyWorkerPolls counts what a worker with two queues sends Redis to find its jobs
// when they come one at a time from 8 clients (each queues a task on the resolve queue when its
// last one is done; a 1 ms handler), the load where the queue runs dry between jobs
// (docs/operations.md#an-idle-worker). It reports asynq's dequeue scripts sent (the job's own is
// one) and the waits' BLMOVEs, per job.
//
//	go test -run '^$' -bench BusyWorkerPolls -benchtime 2000x ./jobs/
func BenchmarkBusyWorkerPolls(b *testing.B) {
	rdb := redistest.New(b)
	w := NewWorker(rdb, WorkerOptions{Concurrency: 20, ShutdownTimeout: time.Second,
		Queues: map[string]int{QueueResolve: 1, QueueWebhooks: 1}})
	var dequeues, waits atomic.Int64
	// Added after the worker's own hook: it sees what reaches Redis.
	rdb.AddHook(cmdSeen{func(cmd redis.Cmder) {
		if d, _ := asynqPoll(cmd); d {
			dequeues.Add(1)
		}
		if idleWait(cmd) {
			waits.Add(1)
		}
	}})
	var done sync.Map // task payload → chan closed when it ran
	w.Handle("bench:poll", asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		time.Sleep(time.Millisecond)
		if ch, ok := done.Load(string(task.Payload())); ok {
			close(ch.(chan struct{}))
		}
		return nil
	}), nil)
	startWorker(b, w)
	c := asynq.NewClientFromRedisClient(rdb)
	defer c.Close()
	const clients = 8
	var next atomic.Int64
	b.ResetTimer()
	dequeues.Store(0)
	waits.Store(0)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				id := strconv.FormatInt(next.Load(), 10) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
				ch := make(chan struct{})
				done.Store(id, ch)
				if _, err := c.Enqueue(asynq.NewTask("bench:poll", []byte(id)), asynq.Queue(QueueResolve)); err != nil {
					b.Error(err)
					return
				}
				<-ch
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(dequeues.Load())/float64(b.N), "dequeues/job")
	b.ReportMetric(float64(waits.Load())/float64(b.N), "blmoves/job")
}
