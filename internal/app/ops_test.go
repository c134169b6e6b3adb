package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/buildinfo"
	"github.com/linkhop/linkhop/jobs"
)

func TestBuildInfoMetric(t *testing.T) {
	t.Parallel()
	mfs, err := app.NewMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "linkhop_build_info" {
			continue
		}
		m := mf.GetMetric()
		if len(m) != 1 || m[0].GetGauge().GetValue() != 1 {
			t.Fatalf("build_info %v", m)
		}
		labels := map[string]string{}
		for _, l := range m[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != buildinfo.Version || labels["revision"] != buildinfo.Revision() || labels["go_version"] != buildinfo.GoVersion() {
			t.Errorf("labels %v", labels)
		}
		return
	}
	t.Error("no linkhop_build_info")
}

func TestRedisLoggerWritesJSON(t *testing.T) {
	t.Parallel()
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	app.RedisLogger(log).Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %s\n", 5, "refused")
	var line map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if line["level"] != "WARN" || line["component"] != "go-redis" || line["msg"] != "redis: connection pool: failed to dial after 5 attempts: refused" {
		t.Errorf("line %v", line)
	}
}

func TestWorkerMetricsProviderLabel(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := app.NewWorkerMetrics(reg)
	failed := "provider_down"
	m.Observe(jobs.Record{Status: jobs.StatusDone, Provider: "bitly"}, 0)
	m.Observe(jobs.Record{Status: jobs.StatusFailed, Provider: "bitly", Error: &failed}, 0)
	m.Observe(jobs.Record{Status: jobs.StatusDone}, 0)
	want := `
# HELP linkhop_jobs_finished_total Finished jobs by status, error code and provider.
# TYPE linkhop_jobs_finished_total counter
linkhop_jobs_finished_total{error="",provider="bitly",status="done"} 1
linkhop_jobs_finished_total{error="",provider="none",status="done"} 1
linkhop_jobs_finished_total{error="provider_down",provider="bitly",status="failed"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "linkhop_jobs_finished_total"); err != nil {
		t.Error(err)
	}
}
