package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) LookupFunc {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(API, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		RedisURL: DefaultRedisURL, HTTPAddr: ":8080", LogLevel: slog.LevelInfo, LogFormat: "json",
		WorkerConcurrency: 50, ResolveMaxHops: 10, ResolveTimeout: 20 * time.Second,
		ResolveMaxAttempts: 3, ResolveBackoffBase: 2 * time.Second, ResolveCacheTTL: 24 * time.Hour,
		ResolveNegativeCacheTTL: 10 * time.Minute, ResolvePerHostConcurrency: 8,
		ResolveFormWaitMax: 15 * time.Second, ResolveAnyHost: false,
		JobRetention: 168 * time.Hour, JobLeaseTTL: 5 * time.Second, WebhookRatePerSecond: 10, WebhookMaxRetries: 3,
		WebhookTimeout: 30 * time.Second, WebhookBackoffBase: 5 * time.Second,
		AuthFailuresPerMinute: 30, ShutdownTimeout: 20 * time.Second, BatchMaxItems: 100,
		RedisMinReplicasTimeout: 500 * time.Millisecond,
	}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
	w, err := Load(Worker, env(nil))
	if err != nil || w.HTTPAddr != ":9090" {
		t.Errorf("worker HTTP_ADDR = %q, %v; want :9090", w.HTTPAddr, err)
	}
}

func TestValues(t *testing.T) {
	t.Parallel()
	c, err := Load(API, env(map[string]string{
		"REDIS_CLUSTER_ADDRS":           "a:1, b:2",
		"LINKHOP_ALLOW_PRIVATE_TARGETS": "true",
		"LINKHOP_HOST_OVERRIDES":        "Bit.ly=127.0.0.1:8081,t.co=[::1]:443",
		"RESOLVE_MAX_HOPS":              "20",
		"WEBHOOK_TIMEOUT":               "1500ms",
		"LOG_LEVEL":                     "debug",
		"LOG_FORMAT":                    "TEXT",
		"WEBHOOK_MAX_RETRIES":           "0",
		"RESOLVE_FORM_WAIT_MAX":         "30s",
		"RESOLVE_ANY_HOST":              "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a:1", "b:2"}, c.RedisClusterAddrs); d != "" {
		t.Error(d)
	}
	if d := cmp.Diff(map[string]string{"bit.ly": "127.0.0.1:8081", "t.co": "[::1]:443"}, c.HostOverrides); d != "" {
		t.Error(d)
	}
	if !c.AllowPrivateTargets || c.ResolveMaxHops != 20 || c.WebhookTimeout != 1500*time.Millisecond ||
		c.LogLevel != slog.LevelDebug || c.LogFormat != "text" || c.WebhookMaxRetries != 0 ||
		c.ResolveFormWaitMax != 30*time.Second || !c.ResolveAnyHost {
		t.Errorf("unexpected config %+v", c)
	}
}

func TestRedisOptions(t *testing.T) {
	t.Parallel()
	c, err := Load(API, env(map[string]string{
		"REDIS_URL":               "redis-sentinel://:p@s1:26379,s2:26379/2?master=m",
		"REDIS_SENTINEL_USERNAME": "sentinel", "REDIS_SENTINEL_PASSWORD": "sp",
		"REDIS_MIN_REPLICAS_ACK": "1", "REDIS_MIN_REPLICAS_TIMEOUT": "250ms",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisSentinelUsername != "sentinel" || c.RedisSentinelPassword != "sp" || c.RedisMinReplicasAck != 1 ||
		c.RedisMinReplicasTimeout != 250*time.Millisecond {
		t.Errorf("unexpected config %+v", c)
	}
	c, err = Load(API, env(map[string]string{"REDIS_URL": "rediss://h:6380/0", "REDIS_TLS_CA_FILE": "config_test.go"}))
	if err != nil || c.RedisTLSCAFile != "config_test.go" {
		t.Errorf("REDIS_TLS_CA_FILE: %q, %v", c.RedisTLSCAFile, err)
	}
}

// QUOTA_RETRY_AFTER_MAX is written as the Retry-After it caps (whole seconds) or as a duration.
func TestQuotaRetryAfterMax(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]time.Duration{"60": time.Minute, "0": 0, "90s": 90 * time.Second, "1h": time.Hour, "0s": 0} {
		c, err := Load(API, env(map[string]string{"QUOTA_RETRY_AFTER_MAX": v}))
		if err != nil || c.QuotaRetryAfterMax != want {
			t.Errorf("%q: %v, %v; want %v", v, c.QuotaRetryAfterMax, err, want)
		}
	}
}

func TestFileVariant(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(API, env(map[string]string{"LINKHOP_ADMIN_TOKEN_FILE": p}))
	if err != nil || c.AdminToken != "s3cret" {
		t.Fatalf("got %q, %v", c.AdminToken, err)
	}
	_, err = Load(API, env(map[string]string{"LINKHOP_ADMIN_TOKEN_FILE": filepath.Join(dir, "missing")}))
	wantVar(t, err, "LINKHOP_ADMIN_TOKEN_FILE")
	_, err = Load(API, env(map[string]string{"LINKHOP_ADMIN_TOKEN_FILE": p, "LINKHOP_ADMIN_TOKEN": "x"}))
	wantVar(t, err, "LINKHOP_ADMIN_TOKEN")
}

func TestRefused(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]string{
		"REDIS_URL":                     {"REDIS_URL": "http://x"},
		"REDIS_CLUSTER_ADDRS":           {"REDIS_CLUSTER_ADDRS": "nohost"},
		"HTTP_ADDR":                     {"HTTP_ADDR": "8080"},
		"LOG_LEVEL":                     {"LOG_LEVEL": "loud"},
		"LOG_FORMAT":                    {"LOG_FORMAT": "xml"},
		"LINKHOP_ALLOW_PRIVATE_TARGETS": {"LINKHOP_ALLOW_PRIVATE_TARGETS": "yes please"},
		"LINKHOP_HOST_OVERRIDES":        {"LINKHOP_HOST_OVERRIDES": "bit.ly=localhost:80"},
		"LINKHOP_PROVIDERS_FILE":        {"LINKHOP_PROVIDERS_FILE": "/nonexistent/providers.json"},
		"WORKER_CONCURRENCY":            {"WORKER_CONCURRENCY": "0"},
		"RESOLVE_MAX_HOPS":              {"RESOLVE_MAX_HOPS": "21"},
		"RESOLVE_TIMEOUT":               {"RESOLVE_TIMEOUT": "20"},
		"RESOLVE_MAX_ATTEMPTS":          {"RESOLVE_MAX_ATTEMPTS": "-1"},
		"RESOLVE_BACKOFF_BASE":          {"RESOLVE_BACKOFF_BASE": "-2s"},
		"RESOLVE_CACHE_TTL":             {"RESOLVE_CACHE_TTL": "0s"},
		"JOB_RETENTION":                 {"JOB_RETENTION": "1s"},
		"JOB_LEASE_TTL":                 {"JOB_LEASE_TTL": "1s"},
		"WEBHOOK_RATE_PER_SECOND":       {"WEBHOOK_RATE_PER_SECOND": "ten"},
		"WEBHOOK_MAX_RETRIES":           {"WEBHOOK_MAX_RETRIES": "101"},
		"WEBHOOK_TIMEOUT":               {"WEBHOOK_TIMEOUT": "soon"},
		"WEBHOOK_BACKOFF_BASE":          {"WEBHOOK_BACKOFF_BASE": "0"},
		"AUTH_FAILURES_PER_MINUTE":      {"AUTH_FAILURES_PER_MINUTE": "0"},
		"SHUTDOWN_TIMEOUT":              {"SHUTDOWN_TIMEOUT": "x"},
		"QUOTA_RETRY_AFTER_MAX":         {"QUOTA_RETRY_AFTER_MAX": "-5"},
		"BATCH_MAX_ITEMS":               {"BATCH_MAX_ITEMS": "1001"},
		"BATCH_MAX_ITEMS zero":          {"BATCH_MAX_ITEMS": "0"},
		"QUOTA_RETRY_AFTER_MAX words":   {"QUOTA_RETRY_AFTER_MAX": "an hour"},
		"QUOTA_RETRY_AFTER_MAX huge":    {"QUOTA_RETRY_AFTER_MAX": "9223372036854775807"},
		"RESOLVE_FORM_WAIT_MAX":         {"RESOLVE_FORM_WAIT_MAX": "0s"},
		"RESOLVE_ANY_HOST":              {"RESOLVE_ANY_HOST": "sometimes"},
		"REDIS_MIN_REPLICAS_ACK":        {"REDIS_MIN_REPLICAS_ACK": "-1"},
		"REDIS_MIN_REPLICAS_ACK many":   {"REDIS_MIN_REPLICAS_ACK": "101"},
		"REDIS_MIN_REPLICAS_TIMEOUT":    {"REDIS_MIN_REPLICAS_TIMEOUT": "3s"},
		"REDIS_MIN_REPLICAS_TIMEOUT 0":  {"REDIS_MIN_REPLICAS_TIMEOUT": "0s"},
		"REDIS_TLS_CA_FILE":             {"REDIS_URL": "rediss://h:1/0", "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
		"REDIS_TLS_CA_FILE plain":       {"REDIS_URL": "redis://h:1/0", "REDIS_TLS_CA_FILE": "config_test.go"},
		"REDIS_SENTINEL_PASSWORD":       {"REDIS_URL": "redis://h:1/0", "REDIS_SENTINEL_PASSWORD": "x"},
		"REDIS_SENTINEL_PASSWORD user":  {"REDIS_URL": "redis://h:1/0", "REDIS_SENTINEL_USERNAME": "x"},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(API, env(e))
			wantVar(t, err, strings.Fields(name)[0])
		})
	}
}

func wantVar(t *testing.T, err error, name string) {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) || ce.Var != name {
		t.Fatalf("err = %v, want a config error naming %s", err, name)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is more than one line: %q", err)
	}
}

func TestEnvNamesCoverContract(t *testing.T) {
	t.Parallel()
	// Every name must be read by Load: setting it to garbage must be refused or change something.
	for _, n := range EnvNames() {
		if _, err := Load(API, env(map[string]string{n + "_FILE": "/nonexistent/x"})); err == nil {
			t.Errorf("%s_FILE is not read by Load", n)
		}
	}
}
