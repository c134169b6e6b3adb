package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestSmoke runs every scenario for a moment so the program cannot rot. No figure is judged:
// only that each scenario finishes without a failed operation and lands in the document.
func TestSmoke(t *testing.T) {
	out := filepath.Join(t.TempDir(), "benchmarks.md")
	prose := "# Benchmarks\n\nHand-written analysis that must survive.\n\n" + beginMarker + "\nold\n" + endMarker + "\n\n## Reproducing\n"
	if err := os.WriteFile(out, []byte(prose), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, []string{"-duration", "200ms", "-warmup", "0s", "-rounds", "2", "-concurrency", "4,8", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	doc, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Hand-written analysis that must survive.", "## Reproducing", "| 1a |", "| 1b |", "| 1c |",
		"| 2a |", "| 2b |", "| 2c |", "| 2d |", "| 3a |", "| 3b |", "| 3c |", "| 4a |", "| 4b |", "| 4c |", "| 4d |", "| 5a |", "| 5b |", "| 5c |", "| 6a |", "| 6b |", "| 6c |", "| 6d |", "| 6e |", "| 6f |", "| 7 |", "| 8a |", "| 8b |", "| 9a |", "| 9b |", "| 9c |", "| 9d |", "| 9e |",
		"| machine |", "| Go |", "| Redis |", "| command |",
	} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("document lacks %q:\n%s", want, doc)
		}
	}
	if strings.Contains(string(doc), "\nold\n") {
		t.Errorf("the old generated section survived:\n%s", doc)
	}
	if !strings.Contains(stdout.String(), "| 6d |") {
		t.Errorf("stdout lacks the table:\n%s", stdout.String())
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"defaults", nil, true},
		{"only known", []string{"-only", "1, 6"}, true},
		{"only unknown", []string{"-only", "99"}, false},
		{"concurrency zero", []string{"-concurrency", "0"}, false},
		{"concurrency words", []string{"-concurrency", "a,b"}, false},
		{"unknown flag", []string{"-nope"}, false},
		{"serve floor", []string{"-serve", "floor", "-addr", "127.0.0.1:0"}, true},
		{"serve poll-ref", []string{"-serve", "poll-ref"}, true},
		{"serve unknown", []string{"-serve", "api"}, false},
		{"no rolling-window log", []string{"-rate-limit", "0", "-only", "3"}, true},
		{"negative limit", []string{"-rate-limit", "-1"}, false},
		{"another limit into the published table", []string{"-rate-limit", "0", "-out", "x.md"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, &bytes.Buffer{})
			if (err == nil) != tc.ok {
				t.Fatalf("parseFlags(%q) = %v, want ok=%v", tc.args, err, tc.ok)
			}
		})
	}
}

func TestKeyShape(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"limiter log", "linkhop:{k:key_abc}:rl", "linkhop:{k:…}:rl"},
		{"idempotency", "linkhop:{k:key_abc}:idem:0123abcd", "linkhop:{k:…}:idem:…"},
		{"asynq task", "asynq:{resolve}:t:6f1c", "asynq:{resolve}:t:…"},
		{"no tag", "plain", "plain"},
		{"no tag, namespaced", "linkhop:webhook:rate:ab12", "linkhop:webhook:rate:…"},
		{"no tag, two parts", "linkhop:x", "linkhop:x"},
		{"tag only", "{x}", "{x}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, keyShape(tc.in)); diff != "" {
				t.Errorf("keyShape(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestSamplePercentiles(t *testing.T) {
	s := sample{ops: 100, elapsed: 2 * time.Second}
	for i := 100; i >= 1; i-- {
		s.lat = append(s.lat, time.Duration(i)*time.Millisecond)
	}
	got := []time.Duration{s.pct(50), s.pct(99), s.pct(100)}
	want := []time.Duration{50 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("percentiles (-want +got):\n%s", diff)
	}
	if r := s.rate(); r != 50 {
		t.Errorf("rate %v, want 50", r)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ name, got, want string }{
		{"small rate", fmtRate(12.34), "12.3/s"},
		{"big rate", fmtRate(1234567.4), "1,234,567/s"},
		{"sub-ms", fmtDur(420 * time.Microsecond), "0.42 ms"},
		{"tens of ms", fmtDur(21400 * time.Microsecond), "21.4 ms"},
		{"seconds", fmtDur(12 * time.Second), "12.0 s"},
		{"make bench", command([]string{"-out", "docs/benchmarks.md"}), "`make bench` (= `go run ./bench -out docs/benchmarks.md`)"},
		{"other command", command([]string{"-only", "1"}), "`go run ./bench -only 1`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteDocCreates(t *testing.T) {
	out := filepath.Join(t.TempDir(), "new.md")
	if err := writeDoc(out, "TABLE\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if !strings.Contains(string(b), beginMarker+"\nTABLE\n"+endMarker) {
		t.Errorf("new document:\n%s", b)
	}
}

func TestDensestAndTightest(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		ts        []time.Duration
		k         int
		densest   int
		tightestK time.Duration
	}{
		{"empty", nil, 1, 0, 0},
		{"one second apart is two spans", ms(0, 1000, 2000), 1, 1, time.Second},
		{"just under a second", ms(0, 999), 1, 2, 999 * time.Millisecond},
		{"unsorted", ms(1500, 0, 900, 1000), 2, 3, 600 * time.Millisecond},
		{"too few for k", ms(0, 10), 5, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := densest(tc.ts); got != tc.densest {
				t.Errorf("densest = %d, want %d", got, tc.densest)
			}
			if got := tightest(tc.ts, tc.k); got != tc.tightestK {
				t.Errorf("tightest(k=%d) = %s, want %s", tc.k, got, tc.tightestK)
			}
		})
	}
}

// TestVerdict: a target judged by CPU looks at the CPU ratio only, one judged by rate at the
// rate only.
func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		r    row
		want string
	}{
		{row{ratio: 0.9, cpuRatio: 0.5, min: 0.7}, "met"},
		{row{ratio: 0.5, cpuRatio: 0.9, min: 0.7}, "missed"},
		{row{ratio: 0.5, cpuRatio: 0.9, min: 0.7, byCPU: true}, "met"},
		{row{ratio: 0.9, cpuRatio: 0.5, min: 0.7, byCPU: true}, "missed"},
		{row{ratio: 0.9, min: 0.7, byCPU: true}, ""},
		{row{ratio: 0.9, cpuRatio: 0.9}, ""},
		{row{ratio: 0.9, cpuRatio: 0.9, min: 0.7, byCPU: true, errs: "x"}, "errors"},
	} {
		if got := tc.r.verdict(); got != tc.want {
			t.Errorf("%+v: verdict %q, want %q", tc.r, got, tc.want)
		}
	}
}
