package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"

	"github.com/google/pprof/profile"
)

// The load generator shares this process with the servers it loads, so the process's CPU time
// covers both. To report the servers' CPU alone (what docs/benchmarks.md#targets judge), the
// load generator's goroutines carry a profiler label and a CPU profile taken over each
// measured span tells what share of the process's CPU they used. Goroutines inherit labels
// from the goroutine that starts them: the HTTP client's dial, read and write goroutines,
// started on behalf of a labelled request, carry the label too, while the servers' goroutines,
// started by their listeners, do not.
const (
	loadLabelKey = "bench"
	loadLabelVal = "load"
)

var loadLabels = pprof.Labels(loadLabelKey, loadLabelVal)

// asLoad runs f with the load generator's label on the calling goroutine (and so on every
// goroutine f starts).
func asLoad(ctx context.Context, f func(context.Context)) {
	pprof.Do(ctx, loadLabels, f)
}

// loadTransport labels every round trip as the load generator's, so that the connection
// goroutines it starts are counted as the load generator's even when the first request on a
// connection came from an unlabelled goroutine (setup code creating the polled jobs, say).
type loadTransport struct{ rt http.RoundTripper }

func (t loadTransport) RoundTrip(r *http.Request) (res *http.Response, err error) {
	asLoad(r.Context(), func(context.Context) { res, err = t.rt.RoundTrip(r) }) //nolint:bodyclose // a RoundTripper hands the body to its caller, who closes it
	return res, err
}

// newLoadClient is newHTTPClient for a load generator whose CPU is not the measured one.
func newLoadClient(conc int) *http.Client {
	c := newHTTPClient(conc)
	c.Transport = loadTransport{c.Transport}
	return c
}

// cpuShares is how a CPU profile's samples split between the load generator and the rest.
type cpuShares struct {
	load, rest, shared int64 // CPU nanoseconds sampled
}

// loadFraction is the load generator's share of the process's CPU: the runtime's own work
// that belongs to no goroutine (garbage collection in the background, the scheduler, the
// network poller) is split in proportion to the goroutines' shares. ok is false when nothing
// labelled or unlabelled was sampled.
func (c cpuShares) loadFraction() (f float64, ok bool) {
	if c.load+c.rest == 0 {
		return 0, false
	}
	return float64(c.load) / float64(c.load+c.rest), true
}

// splitProfile reads a CPU profile and sums its samples by owner.
func splitProfile(b []byte) (cpuShares, error) {
	var c cpuShares
	p, err := profile.Parse(bytes.NewReader(b))
	if err != nil {
		return c, fmt.Errorf("parsing the CPU profile: %w", err)
	}
	vi := len(p.SampleType) - 1 // cpu nanoseconds, after the sample count
	for _, s := range p.Sample {
		v := s.Value[vi]
		switch {
		case len(s.Label[loadLabelKey]) > 0 && s.Label[loadLabelKey][0] == loadLabelVal:
			c.load += v
		case runtimeOnly(s):
			c.shared += v
		default:
			c.rest += v
		}
	}
	return c, nil
}

// runtimeOnly says a sample ran nothing but the runtime: a background GC worker, the
// scheduler, the poller, or a pseudo-frame such as runtime._GC.
func runtimeOnly(s *profile.Sample) bool {
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			if l.Function == nil {
				continue
			}
			n := l.Function.Name
			if !strings.HasPrefix(n, "runtime.") && !strings.HasPrefix(n, "internal/runtime/") && !strings.HasPrefix(n, "runtime/internal/") {
				return false
			}
		}
	}
	return true
}

// spanProfile is a CPU profile of one measured span, kept in memory and written to file too
// when one is named.
type spanProfile struct {
	buf  bytes.Buffer
	file string
	on   bool
}

// startSpanProfile starts the CPU profiler; when it cannot (another profile runs, as under
// `go test -cpuprofile`), the span is measured without a split.
func startSpanProfile(file string) *spanProfile {
	p := &spanProfile{file: file}
	p.on = pprof.StartCPUProfile(&p.buf) == nil
	return p
}

// stop ends the profile, writes it to its file when named, and returns the split.
func (p *spanProfile) stop() (cpuShares, error) {
	if !p.on {
		return cpuShares{}, errProfilerBusy
	}
	pprof.StopCPUProfile()
	var werr error
	if p.file != "" {
		werr = writeProfile(p.file, p.buf.Bytes())
	}
	c, err := splitProfile(p.buf.Bytes())
	return c, errors.Join(err, werr)
}

var errProfilerBusy = errors.New("the CPU profiler was busy")

func writeProfile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("profile dir: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil { //nolint:gosec // G306: the operator's own -cpuprofile directory
		return fmt.Errorf("profile: %w", err)
	}
	return nil
}
