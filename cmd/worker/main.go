// Command worker runs linkhop's background work: resolve jobs and webhook deliveries. It
// serves only /healthz, /readyz and /metrics on HTTP_ADDR (default :9090).
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

	"github.com/redis/go-redis/v9"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/internal/buildinfo"
)

func main() {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: worker [-version]\n\n"+
			"Runs linkhop's resolve jobs and webhook deliveries, configured from the environment\n"+
			"(docs/configuration.md); serves /healthz, /readyz and /metrics on HTTP_ADDR (default :9090).\n\n")
		fs.PrintDefaults()
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "worker: unexpected argument %q; 'worker -h' shows the usage\n", fs.Arg(0))
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(buildinfo.String())
		return
	}
	cfg, err := config.FromEnv(config.Worker)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	redis.SetLogger(app.RedisLogger(app.NewLogger(cfg, os.Stderr)))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, app.NewLogger(cfg, os.Stderr), nil); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		var ce *config.Error
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run processes tasks until ctx ends. ready, when set, gets the ops listener's address.
func run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	app.WarnPrivate(cfg, log)
	stopTracing, err := app.StartTracing(ctx, "linkhop-worker", log)
	if err != nil {
		return err
	}
	defer stopTracing() // last: after the worker has stopped
	rdb, err := app.NewRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg, err := app.Registry(cfg)
	if err != nil {
		return err
	}
	metrics := app.NewMetricsRegistry()
	app.RegisterQueueMetrics(metrics, rdb)
	w, err := app.NewWorker(cfg, rdb, log, app.NewResolver(cfg, rdb, reg), metrics)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return &config.Error{Var: "HTTP_ADDR", Reason: err.Error()}
	}
	ops := &http.Server{Handler: app.OpsHandler(rdb, metrics), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = ops.Serve(ln) }()
	if err := w.Start(); err != nil {
		_ = ops.Close()
		return fmt.Errorf("starting the worker: %w", err)
	}
	log.Info("worker running", "ops_addr", ln.Addr().String(), "concurrency", cfg.WorkerConcurrency, "version", buildinfo.Version, "revision", buildinfo.Revision())
	if ready != nil {
		ready(ln.Addr().String())
	}
	<-ctx.Done()
	// Shutdown order: stop fetching and let running tasks finish within SHUTDOWN_TIMEOUT
	// (unfinished ones go back to their queue); then stop serving probes; Redis closes last.
	log.Info("shutting down: finishing running tasks", "timeout", cfg.ShutdownTimeout)
	w.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ops.Shutdown(sctx)
	log.Info("worker stopped")
	return nil
}
