package main

import (
	"context"
	"fmt"
	"time"
)

// scenarioBatch measures links accepted per second through 100-item POST /v1/resolve/batch
// against single POST /v1/resolve calls, at the same concurrency on the same Redis and stack
// (docs/benchmarks.md#targets: at least 10×). No worker runs, as in scenario 2.
func scenarioBatch(ctx context.Context, e *runEnv) ([]row, error) {
	conc := e.conc[0]
	if err := e.redis.flush(ctx); err != nil {
		return nil, err
	}
	s, err := newStack(ctx, e, conc, stackOptions{keys: apiKeys})
	if err != nil {
		return nil, err
	}
	defer s.close()
	ours := func(ctx context.Context, d time.Duration) sample {
		smp := loadLoop(ctx, conc, d, func(ctx context.Context, w int) error {
			links := make([]string, batchItems)
			for i := range links {
				links[i] = s.nextURL("bb")
			}
			_, err := postBatch(ctx, s.client, s.api.url, s.token(w), links)
			return err
		})
		// The comparison is per link: a batch is batchItems of them.
		smp.ops *= batchItems
		return smp
	}
	theirs := func(ctx context.Context, d time.Duration) sample {
		return loadLoop(ctx, conc, d, func(ctx context.Context, w int) error {
			_, err := s.submit(ctx, s.token(w), s.nextURL("bs"))
			return err
		})
	}
	e.progress("POST /v1/resolve/batch vs single POST /v1/resolve, concurrency %d", conc)
	a, b, err := e.timing.pair(ctx, fmt.Sprintf("batch-c%d", conc), ours, theirs)
	if err != nil {
		return nil, err
	}
	r := compare("7", fmt.Sprintf("links accepted/s through %d-item `POST /v1/resolve/batch` vs single `POST /v1/resolve`, c=%d", batchItems, conc), a, b, false)
	r.target, r.min = "≥ 10×", 10
	return []row{r}, nil
}
