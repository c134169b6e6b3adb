// Package app wires linkhop's parts together from a config.Config: the logger, the Redis
// client, the resolver and the worker. Both mains and the one-process dev mode use it, so the
// two binaries and dev mode cannot drift apart.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/resolve"
)

// NewLogger builds the slog logger of LOG_LEVEL and LOG_FORMAT.
func NewLogger(c config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// StartTracing installs the OpenTelemetry exporter the OTEL_* variables ask for (nothing when
// they ask for none) and returns what flushes it at the end; docs/operations.md#tracing.
func StartTracing(ctx context.Context, service string, log *slog.Logger) (stop func(), err error) {
	shutdown, err := tracing.Setup(ctx, service)
	if err != nil {
		return func() {}, &config.Error{Var: "OTEL_TRACES_EXPORTER", Reason: oneLine(err.Error())}
	}
	if tracing.Enabled(os.LookupEnv) {
		log.Info("tracing on: spans are exported as the OTEL_* variables say")
	}
	return func() {
		// Flush what is buffered, within a bound: a dead collector must not hold a shutdown.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("flushing traces failed", "err", err)
		}
	}, nil
}

// RedisLogger routes go-redis's own log lines (pool dial failures, cluster and sentinel
// notices) through log, so a process's log stream stays JSON when LOG_FORMAT=json: go-redis
// otherwise prints plain text to stderr. Install it with redis.SetLogger, once, in main.
func RedisLogger(log *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogger{log.With("component", "go-redis")}
}

type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// NewRedis connects to REDIS_CLUSTER_ADDRS when set, else to REDIS_URL, with the TLS and
// credentials docs/configuration.md#redis-connections describes. Every connection of the
// process, asynq's included, comes from the client it returns.
//
//   - redis://, rediss:// and unix:// URLs are parsed by go-redis (user, password, TLS,
//     database, options); REDIS_TLS_CA_FILE replaces the system's roots for rediss://.
//   - In Cluster mode, the user, password and TLS of REDIS_URL (when it names any) apply to
//     every node, and each node's certificate is checked against that node's address.
//   - redis-sentinel://[user:password@]host:port[,host:port…][/db]?master=name names the
//     sentinels; the URL's user and password are the primary's and replicas' (and the
//     sentinels' too unless REDIS_SENTINEL_USERNAME or REDIS_SENTINEL_PASSWORD is set).
func NewRedis(c config.Config) (redis.UniversalClient, error) {
	if len(c.RedisClusterAddrs) > 0 {
		opt := &redis.ClusterOptions{Addrs: c.RedisClusterAddrs, ClusterStateReloadInterval: ClusterStateReload}
		if u, err := redis.ParseURL(c.RedisURL); err == nil {
			opt.Username, opt.Password, opt.TLSConfig = u.Username, u.Password, u.TLSConfig
		}
		if opt.TLSConfig != nil {
			// The URL's host names no node: let each connection check the certificate
			// against the address it dials (what the cluster announces for the node).
			opt.TLSConfig.ServerName = ""
			if err := addRoots(c, opt.TLSConfig); err != nil {
				return nil, err
			}
		}
		return redis.NewClusterClient(opt), nil
	}
	u, err := url.Parse(c.RedisURL)
	if err != nil {
		return nil, &config.Error{Var: "REDIS_URL", Reason: "not a URL"}
	}
	if u.Scheme == "redis-sentinel" {
		opt, err := sentinelOptions(c, u)
		if err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(opt), nil
	}
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, &config.Error{Var: "REDIS_URL", Reason: oneLine(err.Error())}
	}
	if opt.TLSConfig != nil {
		if err := addRoots(c, opt.TLSConfig); err != nil {
			return nil, err
		}
	}
	return redis.NewClient(opt), nil
}

// ClusterStateReload is how stale the Cluster client's map of slots may get. go-redis
// re-reads it at once on a MOVED answer, but a dead primary answers nothing: its slots stay
// mapped to it (every command to them failing) until the next periodic reload, 60 s by
// default. At 1 s, a process follows a failover within a second of the cluster completing
// it, for one CLUSTER SLOTS a second while there is traffic
// (docs/operations.md#redis-topologies-what-is-proven).
const ClusterStateReload = time.Second

// sentinelOptions reads a redis-sentinel:// URL. asynq's parser of the same syntax gives the
// password to the sentinels only and drops the database; this one does neither.
func sentinelOptions(c config.Config, u *url.URL) (*redis.FailoverOptions, error) {
	opt := &redis.FailoverOptions{MasterName: u.Query().Get("master")}
	if opt.MasterName == "" {
		return nil, &config.Error{Var: "REDIS_URL", Reason: "a redis-sentinel:// URL needs ?master=<name>"}
	}
	for _, a := range strings.Split(u.Host, ",") {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, "26379") // Sentinel's own port
		}
		opt.SentinelAddrs = append(opt.SentinelAddrs, a)
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return nil, &config.Error{Var: "REDIS_URL", Reason: fmt.Sprintf("database %q is not a number", db)}
		}
		opt.DB = n
	}
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
	}
	opt.SentinelUsername, opt.SentinelPassword = opt.Username, opt.Password
	if c.RedisSentinelUsername != "" || c.RedisSentinelPassword != "" {
		opt.SentinelUsername, opt.SentinelPassword = c.RedisSentinelUsername, c.RedisSentinelPassword
	}
	return opt, nil
}

// addRoots makes t trust exactly the CAs of REDIS_TLS_CA_FILE, when it is set.
func addRoots(c config.Config, t *tls.Config) error {
	if c.RedisTLSCAFile == "" {
		return nil
	}
	pem, err := os.ReadFile(c.RedisTLSCAFile)
	if err != nil {
		return &config.Error{Var: "REDIS_TLS_CA_FILE", Reason: oneLine(err.Error())}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return &config.Error{Var: "REDIS_TLS_CA_FILE", Reason: "holds no PEM certificate"}
	}
	t.RootCAs = pool
	return nil
}

// Registry builds the provider registry: the built-in providers plus LINKHOP_PROVIDERS_FILE.
func Registry(c config.Config, extra ...resolve.Provider) (*resolve.Registry, error) {
	if c.ProvidersFile != "" {
		fromFile, err := resolve.LoadProvidersFile(c.ProvidersFile)
		if err != nil {
			return nil, &config.Error{Var: "LINKHOP_PROVIDERS_FILE", Reason: oneLine(err.Error())}
		}
		extra = append(extra, fromFile...)
	}
	r, err := resolve.NewRegistry(extra)
	if err != nil {
		return nil, &config.Error{Var: "LINKHOP_PROVIDERS_FILE", Reason: oneLine(err.Error())}
	}
	return r, nil
}

// Guard is the address-guard configuration of c.
func Guard(c config.Config) resolve.GuardOptions {
	return resolve.GuardOptions{AllowPrivate: c.AllowPrivateTargets, HostOverrides: c.HostOverrides}
}

// NewResolver builds the resolve service (cache, single flight, politeness) of c. tune, when
// given, adjusts the options before the resolver is built (the benchmark trusts its local
// TLS shortener's test CA this way).
func NewResolver(c config.Config, rdb redis.UniversalClient, reg *resolve.Registry, tune ...func(*resolve.Options)) *resolve.Service {
	opts := resolve.Options{
		Guard:              Guard(c),
		Registry:           reg,
		MaxHops:            c.ResolveMaxHops,
		Timeout:            c.ResolveTimeout,
		UserAgent:          "",
		PerHostConcurrency: c.ResolvePerHostConcurrency,
		FormWaitMax:        c.ResolveFormWaitMax,
		AnyHost:            c.ResolveAnyHost,
		// A worker has at most WORKER_CONCURRENCY requests in flight: as many connections
		// to one provider may be kept for the next resolves (docs/resolving.md#connections).
		IdleConnsPerHost: c.WorkerConcurrency,
	}
	for _, f := range tune {
		f(&opts)
	}
	r := resolve.New(opts)
	return resolve.NewService(rdb, r, resolve.ServiceOptions{
		CacheTTL: c.ResolveCacheTTL, NegativeTTL: c.ResolveNegativeCacheTTL,
	})
}

// WarnPrivate logs loudly when private targets are allowed: a production deployment with it
// on lets users make linkhop fetch internal addresses.
func WarnPrivate(c config.Config, log *slog.Logger) {
	if c.AllowPrivateTargets {
		log.Warn("LINKHOP_ALLOW_PRIVATE_TARGETS is on: resolves and webhooks may reach loopback and private addresses; never use this in production")
	}
	if len(c.HostOverrides) > 0 {
		hosts := make([]string, 0, len(c.HostOverrides))
		for h, a := range c.HostOverrides {
			hosts = append(hosts, h+"="+a)
		}
		log.Warn("LINKHOP_HOST_OVERRIDES in effect; these hosts bypass the address guard", "overrides", strings.Join(hosts, ","))
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
