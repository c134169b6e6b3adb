// Command bench is what `make bench` runs: linkhop's published benchmarks (docs/benchmarks.md).
//
// It starts its own redis-server, runs linkhop's parts as real in-process servers over
// loopback (the API on a net/http server, the worker on asynq, a local one-hop shortener),
// generates the load itself, and measures each scenario side by side with its reference on the
// same Redis in the same run, alternating the two in rounds so that a noisy machine slows both
// alike. Only ratios within one run are meant to be compared across machines. The results are
// printed as a Markdown table and written into docs/benchmarks.md between its markers.
//
//	go run ./bench -out docs/benchmarks.md [-duration 10s] [-only 1,2] [-cpuprofile dir]
//	go run ./bench -serve floor|poll-ref -addr 127.0.0.1:PORT   (REDIS_URL set; scripts/vegeta-check.sh)
//
// No figure is asserted anywhere; the smoke test only checks that every scenario still runs.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command line.
type options struct {
	out    string
	serve  string // a reference server to run instead of the benchmark (serve.go)
	addr   string
	timing timing
	conc   []int
	only   []string
	// rateLimit is the per-minute limit of the API keys: benchRateLimit, or 0 to see what the
	// rolling-window log costs (not with out: the published table is with the log).
	rateLimit int
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var conc, only string
	fs.StringVar(&o.out, "out", "", "Markdown file whose generated section is rewritten (empty: stdout only)")
	fs.DurationVar(&o.timing.d, "duration", 10*time.Second, "measured time per side of each measurement")
	fs.DurationVar(&o.timing.warmup, "warmup", time.Second, "discarded warm-up per side of each measurement")
	fs.IntVar(&o.timing.rounds, "rounds", 2, "alternating rounds the measured time is split into")
	fs.StringVar(&o.timing.profileDir, "cpuprofile", "", "directory for CPU profiles of both sides of each measurement (NAME.pprof, NAME-ref.pprof)")
	fs.StringVar(&conc, "concurrency", "16,64", "load concurrencies of scenarios 2 and 3; the first is used by 1, 4 and 5")
	fs.StringVar(&o.serve, "serve", "", "run a reference server instead (floor or poll-ref) on -addr, Redis from REDIS_URL, for a check with an outside load tool")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8090", "listen address of -serve")
	fs.StringVar(&only, "only", "", "comma-separated scenario numbers to run (default: all)")
	fs.IntVar(&o.rateLimit, "rate-limit", benchRateLimit, "per-minute limit of the API keys of scenarios 2-7 (0: unlimited, no rolling-window log: what the log costs)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.rateLimit < 0 || o.rateLimit != benchRateLimit && o.out != "" {
		return o, fmt.Errorf("-rate-limit %d: a limit of 0 or more, and not with -out (the published table keeps the default)", o.rateLimit)
	}
	if o.serve != "" && o.serve != serveFloor && o.serve != servePollRef {
		fmt.Fprintln(stderr, "bench:", errServeMode)
		return o, errServeMode
	}
	for f := range strings.SplitSeq(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 4096 {
			return o, fmt.Errorf("-concurrency: %q is not a number from 1 to 4096", f)
		}
		o.conc = append(o.conc, n)
	}
	known := scenarios()
	for f := range strings.SplitSeq(only, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !slices.ContainsFunc(known, func(s scenario) bool { return s.id == f }) {
			return o, fmt.Errorf("-only: %w %q", errUnknownScenario, f)
		}
		o.only = append(o.only, f)
	}
	return o, nil
}

// runEnv is what every scenario gets.
type runEnv struct {
	redis     *redisServer
	timing    timing
	conc      []int
	log       io.Writer
	notes     []string
	rateLimit int // of the API keys (-rate-limit)
}

// progress tells the operator what runs now (stderr: stdout carries only the table).
func (e *runEnv) progress(format string, args ...any) {
	fmt.Fprintf(e.log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// note adds a line under the table.
func (e *runEnv) note(format string, args ...any) {
	e.notes = append(e.notes, fmt.Sprintf(format, args...))
}

// scenario is one numbered scenario of docs/benchmarks.md.
type scenario struct {
	id   string
	name string
	run  func(context.Context, *runEnv) ([]row, error)
}

func scenarios() []scenario {
	return []scenario{
		{"1", "limiter vs redis_rate", scenarioLimiter},
		{"2", "accepted POST /v1/resolve vs raw asynq enqueue", scenarioResolve},
		{"3", "GET /v1/jobs polls vs a bare handler", scenarioPoll},
		{"4", "end to end vs raw asynq enqueue→handler", scenarioE2E},
		{"5", "webhook deliveries vs a bare HTTP POST loop", scenarioWebhooks},
		{"6", "Redis round trips per request", scenarioTrips},
		{"7", "100-item batches vs single resolves, per link", scenarioBatch},
		{"8", "job leases: Redis traffic per idle worker and per running job", scenarioLeases},
		{"9", "provider connections: resolves of a local TLS shortener vs a bare http.Client", scenarioTransport},
	}
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	if o.serve != "" {
		if err := serveRef(ctx, o.serve, o.addr, stderr); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		return 0
	}
	started := time.Now()
	rs, err := startRedis(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer rs.close()
	stats := redis.NewClient(&redis.Options{Addr: rs.addr})
	defer stats.Close()
	o.timing.redisCPU = func(ctx context.Context) (time.Duration, error) { return rs.cpu(ctx, stats) }
	e := &runEnv{redis: rs, timing: o.timing, conc: o.conc, log: stderr, rateLimit: o.rateLimit}
	var rows []row
	failed := false
	for _, s := range scenarios() {
		if len(o.only) > 0 && !slices.Contains(o.only, s.id) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		e.progress("scenario %s: %s", s.id, s.name)
		got, err := s.run(ctx, e)
		rows = append(rows, got...)
		if err != nil {
			failed = true
			fmt.Fprintf(stderr, "bench: scenario %s: %v\n", s.id, err)
			rows = append(rows, row{id: s.id, what: s.name, ours: "did not finish", errs: oneLine(err.Error())})
		}
		for _, r := range got {
			if r.errs != "" {
				failed = true
			}
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "bench: interrupted")
		return 1
	}
	m := meta{
		date: started, cpus: runtime.NumCPU(), cpuModel: cpuModel(), platform: runtime.GOOS + "/" + runtime.GOARCH,
		goVer: runtime.Version(), redisVer: rs.version, command: command(args), commit: gitCommit(ctx),
		timing: o.timing, conc: o.conc,
	}
	md := markdown(m, rows, e.notes)
	fmt.Fprint(stdout, md)
	if o.out != "" {
		if err := writeDoc(o.out, md); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		e.progress("wrote %s (whole run %s)", o.out, time.Since(started).Round(time.Second))
	}
	if failed {
		return 1
	}
	return 0
}

// command is the command line that reproduces this run, as Markdown.
func command(args []string) string {
	c := "go run ./bench"
	if len(args) > 0 {
		c += " " + strings.Join(args, " ")
	}
	if slices.Equal(args, []string{"-out", "docs/benchmarks.md"}) {
		return "`make bench` (= `" + c + "`)"
	}
	return "`" + c + "`"
}

// cpuModel is the first "model name" of /proc/cpuinfo, "" where there is none.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// gitCommit names the source measured, "" outside a git checkout.
func gitCommit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}
