package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"
)

// row is one line of the results table.
type row struct {
	id    string // scenario number and letter, "2a"
	what  string // what is measured, and against what
	ours  string // linkhop's figure
	ref   string // the reference's figure, "" when there is none
	ratio float64
	// cpuRatio is the reference's CPU per operation (the measured Go code and Redis; an
	// in-process load generator's CPU left out) over linkhop's: what the ratio tends to when
	// both sides are CPU-bound, and much steadier on a shared machine than the rates themselves.
	cpuRatio float64
	target   string  // the target of docs/benchmarks.md#targets, "" when it names none
	min      float64 // the ratio must be at least this (0: no ratio target)
	byCPU    bool    // min judges cpuRatio instead of ratio
	max      float64 // value must be at most this (0: no value target)
	value    float64 // the figure max is judged on
	errs     string  // operations that failed, if any
}

// compare builds the row of a two-sided measurement; lat adds p50/p99 latencies.
func compare(id, what string, a, b sample, lat bool) row {
	r := row{id: id, what: what, ours: fmtSample(&a, lat), ref: fmtSample(&b, lat)}
	if b.rate() > 0 {
		r.ratio = a.rate() / b.rate()
	}
	if ca, cb := a.perOp(a.goCPU+a.redisCPU), b.perOp(b.goCPU+b.redisCPU); ca > 0 && cb > 0 {
		r.cpuRatio = float64(cb) / float64(ca)
	}
	r.errs = joinErrs(errSummary("linkhop", a), errSummary("reference", b))
	return r
}

func errSummary(who string, s sample) string {
	if s.errs == 0 {
		return ""
	}
	msg := fmt.Sprintf("%s: %d failed", who, s.errs)
	if s.firstErr != nil {
		msg += " (first: " + oneLine(s.firstErr.Error()) + ")"
	}
	return msg
}

func joinErrs(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}

// verdict says whether the row meets its target: "met", "missed" or "" (no target).
func (r row) verdict() string {
	switch {
	case r.errs != "":
		return "errors"
	case r.min > 0 && r.byCPU:
		if r.cpuRatio <= 0 {
			return ""
		}
		if r.cpuRatio >= r.min {
			return "met"
		}
		return "missed"
	case r.min > 0 && r.ratio > 0:
		if r.ratio >= r.min {
			return "met"
		}
		return "missed"
	case r.max > 0:
		if r.value <= r.max {
			return "met"
		}
		return "missed"
	}
	return ""
}

func fmtSample(s *sample, lat bool) string {
	out := fmtRate(s.rate())
	if lat && len(s.lat) > 0 {
		out += " · p50 " + fmtDur(s.pct(50)) + " · p99 " + fmtDur(s.pct(99))
	}
	switch {
	case s.goCPU > 0 && s.ops > 0 && s.split:
		out += "<br>CPU/op: server Go " + fmtMicros(s.perOp(s.goCPU)) + ", Redis " + fmtMicros(s.perOp(s.redisCPU)) +
			"; load generator " + fmtMicros(s.perOp(s.loadCPU)) + " (left out)"
	case s.goCPU > 0 && s.ops > 0:
		out += "<br>CPU/op: Go " + fmtMicros(s.perOp(s.goCPU)) + ", Redis " + fmtMicros(s.perOp(s.redisCPU))
	}
	return out
}

// fmtMicros prints a small duration in µs.
func fmtMicros(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	if us < 10 {
		return fmt.Sprintf("%.1f µs", us)
	}
	return fmt.Sprintf("%.0f µs", us)
}

// fmtRate prints a per-second rate with thousands separators.
func fmtRate(f float64) string {
	if f < 100 {
		return fmt.Sprintf("%.1f/s", f)
	}
	return groupThousands(int64(math.Round(f))) + "/s"
}

func groupThousands(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtDur prints a latency with two or three significant digits.
func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 10_000:
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.1f s", ms/1000)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// meta is what a reader needs to reproduce a run.
type meta struct {
	date     time.Time
	cpus     int
	cpuModel string
	platform string
	goVer    string
	redisVer string
	command  string
	commit   string
	timing   timing
	conc     []int
}

// markdown renders the generated part of docs/benchmarks.md (also printed to stdout).
func markdown(m meta, rows []row, notes []string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "### Run of %s\n\n", m.date.UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("| | |\n|---|---|\n")
	cpu := fmt.Sprintf("%d CPUs", m.cpus)
	if m.cpuModel != "" {
		cpu += " (" + m.cpuModel + ")"
	}
	fmt.Fprintf(&b, "| machine | %s, %s |\n", cpu, m.platform)
	fmt.Fprintf(&b, "| Go | %s |\n", m.goVer)
	fmt.Fprintf(&b, "| Redis | redis-server %s, started by the program (loopback, free port, `--save \"\" --appendonly no`) |\n", m.redisVer)
	fmt.Fprintf(&b, "| command | %s |\n", m.command)
	if m.commit != "" {
		fmt.Fprintf(&b, "| commit | %s |\n", m.commit)
	}
	fmt.Fprintf(&b, "| timing | per measurement: %s warm-up per side, then %s per side in %d alternating rounds |\n",
		m.timing.warmup, m.timing.d, max(m.timing.rounds, 1))
	b.WriteString("\n| # | measurement | linkhop | reference | ratio | target | |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		ratio := ""
		if r.ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", r.ratio)
		}
		if r.cpuRatio > 0 {
			ratio += fmt.Sprintf("<br>CPU %.2f×", r.cpuRatio)
		}
		ref := r.ref
		if ref == "" {
			ref = "—"
		}
		v := r.verdict()
		switch v {
		case "met":
			v = "✅ met"
		case "missed":
			v = "❌ missed"
		case "errors":
			v = "⚠️ " + r.errs
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.id, r.what, r.ours, ref, ratio, r.target, v)
	}
	if len(notes) > 0 {
		b.WriteString("\n")
		for _, n := range notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

// Markers around the generated part of docs/benchmarks.md: the prose around them (analysis,
// what was changed and why) is written by people and survives every run.
const (
	beginMarker = "<!-- BEGIN GENERATED: make bench rewrites everything up to the END marker -->"
	endMarker   = "<!-- END GENERATED -->"
)

// writeDoc puts generated between the markers of path, creating the file (with a short
// preamble) when it does not exist.
func writeDoc(path, generated string) error {
	block := beginMarker + "\n" + generated + endMarker + "\n"
	old, err := os.ReadFile(path) //nolint:gosec // G304: the operator's own -out file
	if errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(path, []byte(defaultDoc(block)), 0o644) //nolint:gosec // G306: a document in the repository, readable by all
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	s := string(old)
	i := strings.Index(s, beginMarker)
	j := strings.Index(s, endMarker)
	var out string
	if i < 0 || j < i {
		out = strings.TrimRight(s, "\n") + "\n\n" + block
	} else {
		rest := strings.TrimPrefix(s[j+len(endMarker):], "\n")
		out = s[:i] + block + rest
	}
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil { //nolint:gosec // G306: a document in the repository, readable by all
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func defaultDoc(block string) string {
	return "# Benchmarks\n\nRun `make bench` to measure; it rewrites the section below.\n\n" + block
}
