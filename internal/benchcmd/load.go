package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"time"
)

// sample is what one side of a measurement did in its measured time.
type sample struct {
	ops      int64
	errs     int64
	elapsed  time.Duration
	lat      []time.Duration // one per successful op, sorted lazily by pct
	firstErr error
	sorted   bool
}

// add merges o into s (rounds of one side are merged into one sample).
func (s *sample) add(o sample) {
	s.ops += o.ops
	s.errs += o.errs
	s.elapsed += o.elapsed
	s.lat = append(s.lat, o.lat...)
	s.sorted = false
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
}

// rate is successful operations per second.
func (s *sample) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

// pct is the p-th percentile (0 < p ≤ 100) of the latencies, nearest rank.
func (s *sample) pct(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	if !s.sorted {
		slices.Sort(s.lat)
		s.sorted = true
	}
	i := int(p/100*float64(len(s.lat))+0.999999) - 1
	return s.lat[min(max(i, 0), len(s.lat)-1)]
}

// op is one operation of a closed loop; worker is the loop's goroutine number.
type op func(ctx context.Context, worker int) error

// closedLoop runs conc goroutines, each calling fn back to back until d has passed, and
// measures from the start until the last operation returned (so ops/elapsed is exact even
// though the last operations overrun d a little).
func closedLoop(ctx context.Context, conc int, d time.Duration, fn op) sample {
	type local struct {
		ops, errs int64
		lat       []time.Duration
		err       error
	}
	locals := make([]local, conc)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			l := &locals[w]
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				if err := fn(ctx, w); err != nil {
					l.errs++
					if l.err == nil && ctx.Err() == nil {
						l.err = err
					}
					continue
				}
				l.ops++
				l.lat = append(l.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	s := sample{elapsed: time.Since(start)}
	for _, l := range locals {
		s.add(sample{ops: l.ops, errs: l.errs, lat: l.lat, firstErr: l.err})
	}
	return s
}

// side is one side of a comparison: it runs its load for d and returns what it measured.
type side func(ctx context.Context, d time.Duration) sample

// timing says how long measurements run.
type timing struct {
	warmup time.Duration // per side, discarded
	d      time.Duration // per side, measured, split over rounds
	rounds int
	// profileDir, when set, receives a CPU profile of linkhop's side (its first measured
	// round) per measurement, named after it.
	profileDir string
}

// pair measures linkhop (a) against its reference (b) in alternating rounds (a b, b a, a b, …)
// after a warm-up of each, so that a slow phase of a noisy machine hits both sides alike.
func (t timing) pair(ctx context.Context, name string, a, b side) (sa, sb sample, err error) {
	if t.warmup > 0 {
		a(ctx, t.warmup)
		b(ctx, t.warmup)
	}
	rounds := max(t.rounds, 1)
	per := t.d / time.Duration(rounds)
	for r := range rounds {
		if err := ctx.Err(); err != nil {
			return sa, sb, err
		}
		runA := func() {
			if r == 0 && t.profileDir != "" {
				stop, perr := startProfile(t.profileDir, name)
				if perr != nil {
					err = perr
				} else {
					defer stop()
				}
			}
			sa.add(a(ctx, per))
		}
		if r%2 == 0 {
			runA()
			sb.add(b(ctx, per))
		} else {
			sb.add(b(ctx, per))
			runA()
		}
	}
	return sa, sb, err
}

// single measures one side alone (scenarios without a reference).
func (t timing) single(ctx context.Context, name string, a side) (sample, error) {
	if t.warmup > 0 {
		a(ctx, t.warmup)
	}
	var s sample
	if t.profileDir != "" {
		stop, err := startProfile(t.profileDir, name)
		if err != nil {
			return s, err
		}
		defer stop()
	}
	s.add(a(ctx, t.d))
	return s, ctx.Err()
}

func startProfile(dir, name string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("profile dir: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}
