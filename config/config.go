// Package config reads linkhop's configuration from the environment.
//
// Both binaries read the same variable names (docs/configuration.md#variables). Every
// variable may instead be given as NAME_FILE, the path of a file holding the value (for
// Kubernetes/Docker secrets). Load fills in the documented default of every variable that is
// not set and refuses bad values with an *Error naming the variable, so a misconfigured
// process never starts half-right. A Config is only complete as Load returns it: its zero
// value is not the defaults (a hand-built one starts from Load with an empty environment).
// The defaults that belong to a domain package (resolve, webhooks, quota) are that package's
// constants; this package only refers to them.
package config

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/linkhop/linkhop/internal/replicas"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/quota"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// Process says which binary is loading the configuration; only HTTP_ADDR's default differs.
type Process int

const (
	// API is cmd/api.
	API Process = iota
	// Worker is cmd/worker.
	Worker
)

// Config is the whole configuration of one process.
type Config struct {
	RedisURL          string   // REDIS_URL
	RedisClusterAddrs []string // REDIS_CLUSTER_ADDRS; non-empty selects Cluster mode
	// RedisTLSCAFile is REDIS_TLS_CA_FILE: the PEM CA certificates a TLS Redis's certificate
	// must chain to, instead of the system's roots.
	RedisTLSCAFile string
	// RedisSentinelUsername and RedisSentinelPassword (REDIS_SENTINEL_USERNAME,
	// REDIS_SENTINEL_PASSWORD) authenticate to the sentinels when they differ from the data
	// nodes' user and password of REDIS_URL.
	RedisSentinelUsername string
	RedisSentinelPassword string
	// RedisMinReplicasAck (REDIS_MIN_REPLICAS_ACK) is how many replicas must hold a job
	// before it is acknowledged; 0 waits for none. RedisMinReplicasTimeout
	// (REDIS_MIN_REPLICAS_TIMEOUT) bounds the wait.
	RedisMinReplicasAck     int
	RedisMinReplicasTimeout time.Duration
	HTTPAddr                string // HTTP_ADDR
	LogLevel                slog.Level
	LogFormat               string // "json" or "text"

	AllowPrivateTargets bool              // LINKHOP_ALLOW_PRIVATE_TARGETS
	HostOverrides       map[string]string // LINKHOP_HOST_OVERRIDES: host -> ip:port
	ProvidersFile       string            // LINKHOP_PROVIDERS_FILE

	WorkerConcurrency         int           // WORKER_CONCURRENCY
	ResolveMaxHops            int           // RESOLVE_MAX_HOPS (1..20)
	ResolveTimeout            time.Duration // RESOLVE_TIMEOUT
	ResolveMaxAttempts        int           // RESOLVE_MAX_ATTEMPTS
	ResolveBackoffBase        time.Duration // RESOLVE_BACKOFF_BASE
	ResolveCacheTTL           time.Duration // RESOLVE_CACHE_TTL
	ResolveNegativeCacheTTL   time.Duration // RESOLVE_NEGATIVE_CACHE_TTL (linkhop extension)
	ResolvePerHostConcurrency int           // RESOLVE_PER_HOST_CONCURRENCY (linkhop extension)
	ResolveFormWaitMax        time.Duration // RESOLVE_FORM_WAIT_MAX
	ResolveAnyHost            bool          // RESOLVE_ANY_HOST
	JobRetention              time.Duration // JOB_RETENTION
	JobLeaseTTL               time.Duration // JOB_LEASE_TTL

	WebhookRatePerSecond int           // WEBHOOK_RATE_PER_SECOND
	WebhookMaxRetries    int           // WEBHOOK_MAX_RETRIES
	WebhookTimeout       time.Duration // WEBHOOK_TIMEOUT
	WebhookBackoffBase   time.Duration // WEBHOOK_BACKOFF_BASE

	AdminToken            string         // LINKHOP_ADMIN_TOKEN; empty disables /admin/*
	TrustedProxies        []netip.Prefix // TRUSTED_PROXIES: peers whose X-Forwarded-For/Forwarded name the client
	AuthFailuresPerMinute int            // AUTH_FAILURES_PER_MINUTE (linkhop extension)
	ShutdownTimeout       time.Duration  // SHUTDOWN_TIMEOUT (linkhop extension)
	QuotaRetryAfterMax    time.Duration  // QUOTA_RETRY_AFTER_MAX; 0 = no cap
	BatchMaxItems         int            // BATCH_MAX_ITEMS
}

// Error is a refused configuration value. Its message is the one line a process prints
// before exiting with status 2.
type Error struct {
	Var    string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Var, e.Reason) }

// Defaults of docs/configuration.md#variables. Those of a domain package are its own
// constants, named here so the table reads in one place.
const (
	DefaultRedisURL                  = "redis://127.0.0.1:6379/0"
	DefaultRedisMinReplicasTimeout   = replicas.DefaultTimeout
	MaxRedisMinReplicasTimeout       = replicas.MaxTimeout
	DefaultAPIAddr                   = ":8080"
	DefaultWorkerAddr                = ":9090"
	DefaultWorkerConcurrency         = 50
	DefaultResolveMaxHops            = resolve.DefaultMaxHops
	MaxResolveHops                   = resolve.HardMaxHops
	DefaultResolveTimeout            = resolve.DefaultTimeout
	DefaultResolveMaxAttempts        = 3
	DefaultResolveBackoffBase        = 2 * time.Second
	DefaultResolveCacheTTL           = resolve.DefaultCacheTTL
	DefaultResolveNegativeCacheTTL   = resolve.DefaultNegativeTTL
	DefaultResolvePerHostConcurrency = resolve.DefaultPerHostConcurrency
	DefaultJobRetention              = 168 * time.Hour
	DefaultJobLeaseTTL               = jobs.DefaultLeaseTTL
	DefaultWebhookRatePerSecond      = webhooks.DefaultRatePerSecond
	DefaultWebhookMaxRetries         = webhooks.DefaultMaxRetries
	DefaultWebhookTimeout            = webhooks.DefaultTimeout
	DefaultWebhookBackoffBase        = webhooks.DefaultBackoffBase
	DefaultAuthFailuresPerMinute     = quota.DefaultAuthFailuresPerMinute
	DefaultQuotaRetryAfterMax        = quota.DefaultQuotaRetryAfterMax
	DefaultBatchMaxItems             = jobs.DefaultBatchMaxItems
	MaxBatchItems                    = jobs.HardMaxBatchItems
	DefaultShutdownTimeout           = 20 * time.Second
)

// EnvNames lists every variable Load reads (without the _FILE forms), for documentation and
// for the deployment manifests' consistency test.
func EnvNames() []string {
	return []string{
		"REDIS_URL", "REDIS_CLUSTER_ADDRS", "REDIS_TLS_CA_FILE", "REDIS_SENTINEL_USERNAME",
		"REDIS_SENTINEL_PASSWORD", "REDIS_MIN_REPLICAS_ACK", "REDIS_MIN_REPLICAS_TIMEOUT", "HTTP_ADDR", "LOG_LEVEL", "LOG_FORMAT",
		"LINKHOP_ALLOW_PRIVATE_TARGETS", "LINKHOP_HOST_OVERRIDES", "LINKHOP_PROVIDERS_FILE",
		"WORKER_CONCURRENCY", "RESOLVE_MAX_HOPS", "RESOLVE_TIMEOUT", "RESOLVE_MAX_ATTEMPTS",
		"RESOLVE_BACKOFF_BASE", "RESOLVE_CACHE_TTL", "RESOLVE_NEGATIVE_CACHE_TTL",
		"RESOLVE_PER_HOST_CONCURRENCY", "RESOLVE_FORM_WAIT_MAX", "RESOLVE_ANY_HOST", "JOB_RETENTION", "JOB_LEASE_TTL", "WEBHOOK_RATE_PER_SECOND",
		"WEBHOOK_MAX_RETRIES", "WEBHOOK_TIMEOUT", "WEBHOOK_BACKOFF_BASE", "LINKHOP_ADMIN_TOKEN", "TRUSTED_PROXIES",
		"AUTH_FAILURES_PER_MINUTE", "SHUTDOWN_TIMEOUT", "QUOTA_RETRY_AFTER_MAX", "BATCH_MAX_ITEMS",
	}
}

// LookupFunc reads one environment variable; os.LookupEnv in production.
type LookupFunc func(name string) (string, bool)

// FromEnv loads the configuration of process p from the process environment.
func FromEnv(p Process) (Config, error) { return Load(p, os.LookupEnv) }

// Load reads every variable through lookup, applies defaults and validates.
func Load(p Process, lookup LookupFunc) (Config, error) {
	r := reader{lookup: lookup}
	c := Config{
		RedisURL:                r.str("REDIS_URL", DefaultRedisURL),
		RedisClusterAddrs:       r.list("REDIS_CLUSTER_ADDRS"),
		RedisTLSCAFile:          r.str("REDIS_TLS_CA_FILE", ""),
		RedisSentinelUsername:   r.str("REDIS_SENTINEL_USERNAME", ""),
		RedisSentinelPassword:   r.str("REDIS_SENTINEL_PASSWORD", ""),
		RedisMinReplicasAck:     r.integer("REDIS_MIN_REPLICAS_ACK", 0, 0, 100),
		RedisMinReplicasTimeout: r.duration("REDIS_MIN_REPLICAS_TIMEOUT", DefaultRedisMinReplicasTimeout),
		LogFormat:               strings.ToLower(r.str("LOG_FORMAT", "json")),

		AllowPrivateTargets: r.boolean("LINKHOP_ALLOW_PRIVATE_TARGETS"),
		HostOverrides:       r.overrides("LINKHOP_HOST_OVERRIDES"),
		ProvidersFile:       r.str("LINKHOP_PROVIDERS_FILE", ""),

		WorkerConcurrency:         r.integer("WORKER_CONCURRENCY", DefaultWorkerConcurrency, 1, 10000),
		ResolveMaxHops:            r.integer("RESOLVE_MAX_HOPS", DefaultResolveMaxHops, 1, MaxResolveHops),
		ResolveTimeout:            r.duration("RESOLVE_TIMEOUT", DefaultResolveTimeout),
		ResolveMaxAttempts:        r.integer("RESOLVE_MAX_ATTEMPTS", DefaultResolveMaxAttempts, 1, 100),
		ResolveBackoffBase:        r.duration("RESOLVE_BACKOFF_BASE", DefaultResolveBackoffBase),
		ResolveCacheTTL:           r.duration("RESOLVE_CACHE_TTL", DefaultResolveCacheTTL),
		ResolveNegativeCacheTTL:   r.duration("RESOLVE_NEGATIVE_CACHE_TTL", DefaultResolveNegativeCacheTTL),
		ResolvePerHostConcurrency: r.integer("RESOLVE_PER_HOST_CONCURRENCY", DefaultResolvePerHostConcurrency, 1, 10000),
		ResolveFormWaitMax:        r.duration("RESOLVE_FORM_WAIT_MAX", resolve.DefaultFormWaitMax),
		ResolveAnyHost:            r.boolean("RESOLVE_ANY_HOST"),
		JobRetention:              r.duration("JOB_RETENTION", DefaultJobRetention),
		JobLeaseTTL:               r.duration("JOB_LEASE_TTL", DefaultJobLeaseTTL),

		WebhookRatePerSecond: r.integer("WEBHOOK_RATE_PER_SECOND", DefaultWebhookRatePerSecond, 1, 100000),
		WebhookMaxRetries:    r.integer("WEBHOOK_MAX_RETRIES", DefaultWebhookMaxRetries, 0, 100),
		WebhookTimeout:       r.duration("WEBHOOK_TIMEOUT", DefaultWebhookTimeout),
		WebhookBackoffBase:   r.duration("WEBHOOK_BACKOFF_BASE", DefaultWebhookBackoffBase),

		AdminToken:            r.str("LINKHOP_ADMIN_TOKEN", ""),
		TrustedProxies:        r.prefixes("TRUSTED_PROXIES"),
		AuthFailuresPerMinute: r.integer("AUTH_FAILURES_PER_MINUTE", DefaultAuthFailuresPerMinute, 1, 1000000),
		ShutdownTimeout:       r.duration("SHUTDOWN_TIMEOUT", DefaultShutdownTimeout),
		QuotaRetryAfterMax:    r.seconds("QUOTA_RETRY_AFTER_MAX", DefaultQuotaRetryAfterMax),
		BatchMaxItems:         r.integer("BATCH_MAX_ITEMS", DefaultBatchMaxItems, 1, MaxBatchItems),
	}
	def := DefaultAPIAddr
	if p == Worker {
		def = DefaultWorkerAddr
	}
	c.HTTPAddr = r.str("HTTP_ADDR", def)
	c.LogLevel = r.level("LOG_LEVEL")
	if r.err != nil {
		return Config{}, r.err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks relations and formats that single-value parsing cannot.
func (c Config) Validate() error {
	if len(c.RedisClusterAddrs) == 0 {
		u, err := url.Parse(c.RedisURL)
		if err != nil {
			return &Error{"REDIS_URL", "not a URL"}
		}
		switch u.Scheme {
		case "redis", "rediss", "redis-sentinel", "unix":
		default:
			return &Error{"REDIS_URL", fmt.Sprintf("scheme %q is not redis://, rediss:// or redis-sentinel://", u.Scheme)}
		}
	}
	if err := c.validateRedisOptions(); err != nil {
		return err
	}
	for _, a := range c.RedisClusterAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return &Error{"REDIS_CLUSTER_ADDRS", fmt.Sprintf("%q is not host:port", a)}
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return &Error{"HTTP_ADDR", fmt.Sprintf("%q is not [host]:port", c.HTTPAddr)}
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return &Error{"LOG_FORMAT", fmt.Sprintf("%q is not json or text", c.LogFormat)}
	}
	if c.ProvidersFile != "" {
		if _, err := os.Stat(c.ProvidersFile); err != nil {
			return &Error{"LINKHOP_PROVIDERS_FILE", "cannot read the file: " + err.Error()}
		}
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"RESOLVE_TIMEOUT", c.ResolveTimeout}, {"RESOLVE_BACKOFF_BASE", c.ResolveBackoffBase},
		{"RESOLVE_CACHE_TTL", c.ResolveCacheTTL}, {"RESOLVE_NEGATIVE_CACHE_TTL", c.ResolveNegativeCacheTTL},
		{"RESOLVE_FORM_WAIT_MAX", c.ResolveFormWaitMax},
		{"JOB_RETENTION", c.JobRetention}, {"WEBHOOK_TIMEOUT", c.WebhookTimeout},
		{"WEBHOOK_BACKOFF_BASE", c.WebhookBackoffBase}, {"SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return &Error{p.name, "must be a positive duration"}
		}
	}
	if c.JobRetention < time.Minute {
		return &Error{"JOB_RETENTION", "must be at least 1m"}
	}
	// Leases are renewed about every second: a TTL much closer to that would take a slow but
	// live worker's jobs away; one of minutes would give up the point of the leases.
	if c.JobLeaseTTL < 2*time.Second || c.JobLeaseTTL > 10*time.Minute {
		return &Error{"JOB_LEASE_TTL", "must be between 2s and 10m"}
	}
	return nil
}

// validateRedisOptions checks the variables that refine REDIS_URL and REDIS_CLUSTER_ADDRS.
func (c Config) validateRedisOptions() error {
	scheme := ""
	if u, err := url.Parse(c.RedisURL); err == nil {
		scheme = u.Scheme
	}
	if c.RedisTLSCAFile != "" {
		if scheme != "rediss" {
			// A CA file with a plain connection is a mistake that would otherwise go unnoticed.
			return &Error{"REDIS_TLS_CA_FILE", "is set, but REDIS_URL is not rediss://"}
		}
		if _, err := os.Stat(c.RedisTLSCAFile); err != nil {
			return &Error{"REDIS_TLS_CA_FILE", "cannot read the file: " + err.Error()}
		}
	}
	if (c.RedisSentinelUsername != "" || c.RedisSentinelPassword != "") &&
		(scheme != "redis-sentinel" || len(c.RedisClusterAddrs) > 0) {
		return &Error{"REDIS_SENTINEL_PASSWORD", "sentinel credentials are set, but REDIS_URL is not redis-sentinel://"}
	}
	if c.RedisMinReplicasTimeout < time.Millisecond || c.RedisMinReplicasTimeout > MaxRedisMinReplicasTimeout {
		return &Error{"REDIS_MIN_REPLICAS_TIMEOUT", fmt.Sprintf("must be between 1ms and %v", MaxRedisMinReplicasTimeout)}
	}
	return nil
}

// reader collects the first error so Load reports exactly one variable.
type reader struct {
	lookup LookupFunc
	err    error
}

func (r *reader) fail(name, reason string) {
	if r.err == nil {
		r.err = &Error{name, reason}
	}
}

// raw returns the value of name or of name_FILE; ok is false when neither is set (or empty).
func (r *reader) raw(name string) (string, bool) {
	v, hasV := r.lookup(name)
	path, hasF := r.lookup(name + "_FILE")
	if hasV && hasF && v != "" && path != "" {
		r.fail(name, "both "+name+" and "+name+"_FILE are set")
		return "", false
	}
	if hasF && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			r.fail(name+"_FILE", "cannot read the file: "+err.Error())
			return "", false
		}
		return strings.TrimRight(string(b), "\r\n"), true
	}
	v = strings.TrimSpace(v)
	return v, v != ""
}

func (r *reader) str(name, def string) string {
	if v, ok := r.raw(name); ok {
		return v
	}
	return def
}

func (r *reader) list(name string) []string {
	v, ok := r.raw(name)
	if !ok {
		return nil
	}
	var out []string
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func (r *reader) boolean(name string) bool {
	v, ok := r.raw(name)
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, fmt.Sprintf("%q is not a boolean (true/false)", v))
	}
	return b
}

func (r *reader) integer(name string, def, lo, hi int) int {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(name, fmt.Sprintf("%q is not an integer", v))
		return def
	}
	if n < lo || n > hi {
		r.fail(name, fmt.Sprintf("%d is outside %d..%d", n, lo, hi))
	}
	return n
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, fmt.Sprintf("%q is not a duration like 30s or 24h", v))
		return def
	}
	if d <= 0 {
		r.fail(name, "must be a positive duration")
	}
	return d
}

// seconds reads a length of time that may be 0: whole seconds ("60", as the Retry-After it
// caps is written) or a Go duration ("1m").
func (r *reader) seconds(name string, def time.Duration) time.Duration {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.ParseInt(v, 10, 64); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
		if n > int64(math.MaxInt64/time.Second) {
			err = strconv.ErrRange
		}
	}
	if err != nil {
		r.fail(name, fmt.Sprintf("%q is not whole seconds (60) or a duration like 1m", v))
		return def
	}
	if d < 0 {
		r.fail(name, "must not be negative")
		return def
	}
	return d
}

func (r *reader) level(name string) slog.Level {
	v, ok := r.raw(name)
	if !ok {
		return slog.LevelInfo
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.fail(name, fmt.Sprintf("%q is not debug, info, warn or error", v))
	}
	return l
}

// overrides reads LINKHOP_HOST_OVERRIDES with resolve.ParseHostOverrides, the one parser of
// it (tested and fuzzed where it lives).
func (r *reader) overrides(name string) map[string]string {
	v, ok := r.raw(name)
	if !ok {
		return nil
	}
	m, err := resolve.ParseHostOverrides(v)
	if err != nil {
		r.fail(name, strings.TrimPrefix(err.Error(), resolve.ErrBadHostOverride.Error()+": "))
		return nil
	}
	return m
}

// prefixes parses a comma-separated list of CIDR prefixes; a bare address is its own /32 or
// /128.
func (r *reader) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, part := range r.list(name) {
		p, err := netip.ParsePrefix(part)
		if err != nil {
			a, aerr := netip.ParseAddr(part)
			if aerr != nil {
				r.fail(name, fmt.Sprintf("%q is not a CIDR prefix (10.0.0.0/8) or an address", part))
				return nil
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}
