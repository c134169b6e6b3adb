package main

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
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
	// goCPU and redisCPU are the CPU time the measured Go code and the redis-server spent
	// during the measured time; zero when not measured. Per operation they vary much less with
	// a busy machine than rates do. goCPU is this process's CPU, less loadCPU when split.
	goCPU, redisCPU time.Duration
	// loadCPU is the in-process load generator's share of this process's CPU (split set),
	// which the comparisons leave out: see split.go.
	loadCPU time.Duration
	split   bool
	// cpuSet says the side measured CPU itself (around its measured window only).
	cpuSet bool
}

// add merges o into s (rounds of one side are merged into one sample).
func (s *sample) add(o sample) {
	s.ops += o.ops
	s.errs += o.errs
	s.elapsed += o.elapsed
	s.lat = append(s.lat, o.lat...)
	s.sorted = false
	s.goCPU += o.goCPU
	s.redisCPU += o.redisCPU
	s.loadCPU += o.loadCPU
	s.split = s.split || o.split
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
}

// perOp divides a CPU time by the operations done.
func (s *sample) perOp(d time.Duration) time.Duration {
	if s.ops == 0 {
		return 0
	}
	return d / time.Duration(s.ops)
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
// though the last operations overrun d a little). Its CPU is the measured one: fn is the
// operation itself (a raw Enqueue, a client's request).
func closedLoop(ctx context.Context, conc int, d time.Duration, fn op) sample {
	return loop(ctx, conc, d, fn, false)
}

// loadLoop is closedLoop for a load generator loading a server in this process: its
// goroutines carry the load generator's label, so that its CPU is told apart from the
// server's and left out of the comparison.
func loadLoop(ctx context.Context, conc int, d time.Duration, fn op) sample {
	return loop(ctx, conc, d, fn, true)
}

func loop(ctx context.Context, conc int, d time.Duration, fn op, load bool) sample {
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
	worker := func(ctx context.Context, w int) {
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
	}
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			if load {
				asLoad(ctx, func(ctx context.Context) { worker(ctx, w) })
				return
			}
			worker(ctx, w)
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
	// profileDir, when set, receives CPU profiles of each side's first measured round per
	// measurement: NAME.pprof for linkhop, NAME-ref.pprof for the reference.
	profileDir string
	// redisCPU, when set, reads the redis-server's total CPU time.
	redisCPU func(context.Context) (time.Duration, error)
}

// measured runs one side for d and adds the CPU time spent by this process and by Redis,
// unless the side measured them itself. A CPU profile of the span splits this process's CPU
// between the load generator (loadLoop, newLoadClient) and the measured code; profileFile,
// when not empty, also receives the profile.
func (t timing) measured(ctx context.Context, s side, d time.Duration, profileFile string) (sample, error) {
	prof := startSpanProfile(profileFile)
	g0, r0 := t.cpuNow(ctx)
	out := s(ctx, d)
	g1, r1 := t.cpuNow(ctx)
	shares, err := prof.stop()
	if errors.Is(err, errProfilerBusy) {
		err = nil
	}
	if out.cpuSet {
		return out, err
	}
	out.goCPU, out.redisCPU = g1-g0, r1-r0
	if f, ok := shares.loadFraction(); ok && shares.load > 0 {
		out.loadCPU = time.Duration(float64(out.goCPU) * f)
		out.goCPU -= out.loadCPU
		out.split = true
	}
	return out, err
}

// cpuNow reads this process's and Redis's CPU time so far.
func (t timing) cpuNow(ctx context.Context) (goCPU, redisCPU time.Duration) {
	return processCPU(), t.readRedisCPU(ctx)
}

func (t timing) readRedisCPU(ctx context.Context) time.Duration {
	if t.redisCPU == nil {
		return 0
	}
	d, err := t.redisCPU(ctx)
	if err != nil {
		return 0
	}
	return d
}

// processCPU is the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
	// profiled runs one round of a side; round 0's profile goes to the -cpuprofile directory.
	profiled := func(r int, file string, s side) sample {
		path := ""
		if r == 0 && t.profileDir != "" {
			path = filepath.Join(t.profileDir, file+".pprof")
		}
		out, perr := t.measured(ctx, s, per, path)
		if perr != nil && err == nil {
			err = perr
		}
		return out
	}
	for r := range rounds {
		if err := ctx.Err(); err != nil {
			return sa, sb, err
		}
		if r%2 == 0 {
			sa.add(profiled(r, name, a))
			sb.add(profiled(r, name+"-ref", b))
		} else {
			sb.add(profiled(r, name+"-ref", b))
			sa.add(profiled(r, name, a))
		}
	}
	return sa, sb, err
}
