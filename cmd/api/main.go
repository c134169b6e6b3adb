// Command api is linkhop's HTTP API and its key administration CLI.
//
//	api                 serve the API (configuration from the environment, docs/configuration.md)
//	api -dev            everything in one process on an embedded Redis, for trying linkhop
//	api keys …          manage API keys (api keys help)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/buildinfo"
	"github.com/linkhop/linkhop/resolve"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "keys" {
		os.Exit(keysCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: api [-dev [-any-host]] | api keys … | api -version\n\n"+
			"Serves linkhop's HTTP API, configured from the environment (docs/configuration.md).\n\n")
		fs.PrintDefaults()
	}
	dev := fs.Bool("dev", false, "run API and worker in one process on an embedded in-memory Redis")
	anyHost := fs.Bool("any-host", false, "with -dev: resolve links on any host, not only providers' (RESOLVE_ANY_HOST=true)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "api: unknown command %q; 'api -h' shows the usage\n", fs.Arg(0))
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(buildinfo.String())
		return
	}
	if *anyHost && !*dev {
		fmt.Fprintln(os.Stderr, "api: -any-host goes with -dev; in production set RESOLVE_ANY_HOST=true on API and worker")
		os.Exit(2)
	}
	cfg, err := config.FromEnv(config.API)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *anyHost {
		cfg.ResolveAnyHost = true
	}
	redis.SetLogger(app.RedisLogger(app.NewLogger(cfg, os.Stderr)))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *dev {
		err = runDev(ctx, cfg, os.Stdout)
	} else {
		err = run(ctx, cfg, app.NewLogger(cfg, os.Stderr), runOptions{})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		var ce *config.Error
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// deps is what run builds; tests and dev mode reach in through it.
type deps struct {
	rdb     redis.UniversalClient
	metrics *prometheus.Registry
	ln      net.Listener
}

// runOptions are what dev mode and tests add to a plain run.
type runOptions struct {
	providers []resolve.Provider // extra providers (dev mode's demo shortener)
	worker    bool               // run the worker in this process too (dev mode)
	ready     func(deps)         // called once the listener is open
}

// run serves the API until ctx ends, then shuts down in order.
func run(ctx context.Context, cfg config.Config, log *slog.Logger, o runOptions) error {
	app.WarnPrivate(cfg, log)
	stopTracing, err := app.StartTracing(ctx, "linkhop-api", log)
	if err != nil {
		return err
	}
	// Deferred first, so it runs last: after the server and the worker have stopped.
	defer stopTracing()
	rdb, err := app.NewRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg, err := app.Registry(cfg, o.providers...)
	if err != nil {
		return err
	}
	svc := app.NewResolver(cfg, rdb, reg)
	metrics := app.NewMetricsRegistry()
	h, err := app.NewAPI(cfg, rdb, log, reg, svc, metrics)
	if err != nil {
		return err
	}
	if o.worker {
		w, err := app.NewWorker(cfg, rdb, log, svc, metrics)
		if err != nil {
			return err
		}
		if err := w.Start(); err != nil {
			return fmt.Errorf("starting the worker: %w", err)
		}
		// Deferred after rdb.Close, so it runs before it: the worker stops before Redis closes.
		defer w.Shutdown()
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return &config.Error{Var: "HTTP_ADDR", Reason: err.Error()}
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("api listening", "addr", ln.Addr().String(), "version", buildinfo.Version, "revision", buildinfo.Revision())
	if o.ready != nil {
		o.ready(deps{rdb: rdb, metrics: metrics, ln: ln})
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Shutdown order: stop accepting and let in-flight requests finish (bounded by
	// SHUTDOWN_TIMEOUT, below the pod's grace period); only then close Redis (deferred).
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("draining requests: %w", err)
	}
	log.Info("api stopped")
	return nil
}
