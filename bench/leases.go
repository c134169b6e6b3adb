package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/jobs"
)

// leasesRunning is how many jobs the busy worker of scenario 8 holds at once: the default
// WORKER_CONCURRENCY.
const leasesRunning = 50

// scenarioLeases measures what job leases cost Redis (docs/operations.md#job-leases): a worker
// process's beat (its heartbeat, renewing its leases, and looking for lapsed ones to reap) with
// no job running, then with leasesRunning jobs running, each over the scenario's duration, with
// a round-trip counter on the worker's own client and Redis's CPU time. A lease's take rides
// in the pipeline that reads the job's record; its release rides on the next beat.
func scenarioLeases(ctx context.Context, e *runEnv) ([]row, error) {
	if err := e.redis.flush(ctx); err != nil {
		return nil, err
	}
	admin := redis.NewClient(&redis.Options{Addr: e.redis.addr})
	defer admin.Close()
	d := max(e.timing.d, 3*time.Second) // at least a few beats
	measure := func(running int) (trips, perSec float64, cpu time.Duration, err error) {
		counter := &tripCounter{}
		c := redis.NewClient(&redis.Options{Addr: e.redis.addr})
		defer c.Close()
		c.AddHook(counter)
		ls := jobs.NewLeases(c, jobs.LeaseOptions{})
		for i := range running {
			// Stop removes the leases still held.
			if _, _, err := ls.Take(ctx, jobs.LeaseRef{Kind: jobs.LeaseResolve, KeyID: "key_bench", JobID: "job" + strconv.Itoa(i), Task: "job" + strconv.Itoa(i)}); err != nil {
				return 0, 0, 0, err
			}
		}
		counter.take()
		cpu0, err := e.redis.cpu(ctx, admin)
		if err != nil {
			return 0, 0, 0, err
		}
		start := time.Now()
		ls.Start()
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		ls.Stop(ctx)
		el := time.Since(start)
		// The beats only: connection set-up and Stop's clean-up are not the steady cost.
		_, names := counter.take()
		n := 0
		for _, nm := range names {
			if strings.HasPrefix(nm, "evalsha linkhop:lease:") || strings.HasPrefix(nm, "eval linkhop:lease:") {
				n++
			}
		}
		cpu1, err := e.redis.cpu(ctx, admin)
		if err != nil {
			return 0, 0, 0, err
		}
		return float64(n), float64(n) / el.Seconds(), time.Duration(float64(cpu1-cpu0) / el.Seconds()), nil
	}
	e.progress("job leases: Redis alone, an idle worker's beat, then %d running jobs, %v each", leasesRunning, d)
	// Redis's own background work (its cron) over the same span, taken off the figures below.
	base0, err := e.redis.cpu(ctx, admin)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	base1, err := e.redis.cpu(ctx, admin)
	if err != nil {
		return nil, err
	}
	baseline := time.Duration(float64(base1-base0) / time.Since(t0).Seconds())
	_, idleRate, idleCPU, err := measure(0)
	if err != nil {
		return nil, err
	}
	_, busyRate, busyCPU, err := measure(leasesRunning)
	if err != nil {
		return nil, err
	}
	perJobCPU := max(busyCPU-idleCPU, 0) / leasesRunning
	idleCPU, busyCPU = max(idleCPU-baseline, 0), max(busyCPU-baseline, 0)
	rows := []row{
		{id: "8a", what: "job leases: Redis traffic of an idle worker (heartbeat + looking for lapsed leases to reap)",
			ours: fmt.Sprintf("%.2f round trips/s (one script per beat); Redis CPU %s per second", idleRate, fmtMicros(idleCPU))},
		{id: "8b", what: fmt.Sprintf("… of a worker running %d jobs (renewing their leases)", leasesRunning),
			ours: fmt.Sprintf("%.2f round trips/s in all, %.3f per running job per second; Redis CPU %s per second, %s per running job per second above idle; taking a lease rides in the pipeline that reads the job (no round trip of its own)",
				busyRate, busyRate/leasesRunning, fmtMicros(busyCPU), fmtMicros(perJobCPU))},
	}
	e.note("8: beats counted with a go-redis hook on the leases' own client over %v per side (the first beat of a process also loads the script: one more round trip, once); Redis CPU from INFO cpu over the same span, less Redis's own background work measured alone (%s per second). INFO cpu has a coarse grain: read the CPU figures as orders of magnitude.", d, fmtMicros(baseline))
	return rows, nil
}
