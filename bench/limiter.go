package main

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/quota"
)

// limiterVariant is one workload of scenario 1.
type limiterVariant struct {
	name  string
	keys  int
	limit int // per minute, for both limiters
	local bool
	// admitted says whether every check must be admitted (anything else is an error) or,
	// for the 429-heavy variants, is free to go either way.
	admitted bool
}

// scenarioLimiter is the limiter comparison of docs/benchmarks.md#targets: quota.Limiter.Check (exact sliding
// window, one Lua script) against go-redis/redis_rate's GCRA Allow on the same Redis, same
// client, same concurrency, same keys.
func scenarioLimiter(ctx context.Context, e *runEnv) ([]row, error) {
	conc := e.conc[0]
	variants := []limiterVariant{
		{name: "all admitted", keys: 10_000, limit: benchRateLimit, local: true, admitted: true},
		// 100 keys of 10 a minute: after the first 1,000 checks nearly every check is a 429.
		{name: "429-heavy, quota.Check with its local memory of 429s", keys: 100, limit: 10, local: true},
		{name: "429-heavy, every check in Redis (local memory off)", keys: 100, limit: 10, local: false},
	}
	var rows []row
	for i, v := range variants {
		if err := e.redis.flush(ctx); err != nil {
			return rows, err
		}
		rdb := redis.NewClient(&redis.Options{Addr: e.redis.addr})
		lim := quota.New(rdb, quota.WithLocalBlock(v.local))
		rr := redis_rate.NewLimiter(rdb)
		rrLimit := redis_rate.PerMinute(v.limit)
		ids := make([]string, v.keys)
		for k := range ids {
			ids[k] = "key_bench" + strconv.Itoa(k)
		}
		var next atomic.Int64
		ql := quota.Limits{PerMinute: v.limit, DailyQuota: -1}
		ours := func(ctx context.Context, d time.Duration) sample {
			return closedLoop(ctx, conc, d, func(ctx context.Context, _ int) error {
				id := ids[next.Add(1)%int64(len(ids))]
				dec, err := lim.Check(ctx, quota.Request{KeyID: id, Limits: ql})
				if err != nil {
					return err
				}
				if v.admitted && !dec.Allowed {
					return fmt.Errorf("%w: %s rejected", errStatus, id)
				}
				return nil
			})
		}
		theirs := func(ctx context.Context, d time.Duration) sample {
			return closedLoop(ctx, conc, d, func(ctx context.Context, _ int) error {
				id := ids[next.Add(1)%int64(len(ids))]
				res, err := rr.Allow(ctx, "rate:"+id, rrLimit)
				if err != nil {
					return err
				}
				if v.admitted && res.Allowed == 0 {
					return fmt.Errorf("%w: %s rejected", errStatus, id)
				}
				return nil
			})
		}
		e.progress("limiter: %s, concurrency %d", v.name, conc)
		a, b, err := e.timing.pair(ctx, "limiter-"+strconv.Itoa(i+1), ours, theirs)
		_ = rdb.Close()
		if err != nil {
			return rows, err
		}
		r := compare(fmt.Sprintf("1%c", 'a'+i), fmt.Sprintf("limiter checks/s, %s, c=%d", v.name, conc), a, b, false)
		r.target, r.min = "≥ 0.5×", 0.5
		rows = append(rows, r)
	}
	return rows, nil
}
