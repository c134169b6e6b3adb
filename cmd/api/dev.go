package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/keys"
	"github.com/linkhop/linkhop/resolve"
)

// demoHost is dev mode's built-in shortener, so the printed curl line resolves end to end
// without the internet.
const demoHost = "demo.linkhop.localhost"

// runDev runs API and worker in one process on an embedded miniredis, with private targets
// allowed, and prints a ready key and a curl line to out.
func runDev(ctx context.Context, cfg config.Config, out io.Writer) error {
	return runDevWith(ctx, cfg, out, nil)
}

func runDevWith(ctx context.Context, cfg config.Config, out io.Writer, ready func(deps, string)) error {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("starting the embedded Redis: %w", err)
	}
	defer mr.Close()
	// miniredis expires keys only when told time has passed.
	stopTicker := make(chan struct{})
	defer close(stopTicker)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				mr.FastForward(time.Second)
			case <-stopTicker:
				return
			}
		}
	}()

	demo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	demoSrv := &http.Server{Handler: demoShortener(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = demoSrv.Serve(demo) }()
	defer demoSrv.Close()

	cfg.RedisURL = "redis://" + mr.Addr() + "/0"
	cfg.RedisClusterAddrs = nil
	cfg.AllowPrivateTargets = true
	if cfg.HostOverrides == nil {
		cfg.HostOverrides = map[string]string{}
	}
	cfg.HostOverrides[demoHost] = demo.Addr().String()
	if _, set := os.LookupEnv("LOG_FORMAT"); !set {
		cfg.LogFormat = "text"
	}
	log := app.NewLogger(cfg, os.Stderr)
	if cfg.RedisMinReplicasAck > 0 {
		// The embedded Redis has no replicas: waiting for any would refuse every submit.
		log.Warn("REDIS_MIN_REPLICAS_ACK is ignored in dev mode: the embedded Redis has no replicas",
			"REDIS_MIN_REPLICAS_ACK", cfg.RedisMinReplicasAck)
		cfg.RedisMinReplicasAck = 0
	}

	demoProvider := resolve.Provider{ID: "linkhop-demo", Label: "linkhop dev-mode demo shortener",
		Hosts: []string{demoHost}, Tier: resolve.TierStandard}
	return run(ctx, cfg, log, runOptions{
		providers: []resolve.Provider{demoProvider},
		worker:    true,
		ready: func(d deps) {
			c, err := keys.NewStore(d.rdb).Create(ctx, keys.CreateParams{Name: "dev"})
			if err != nil {
				log.Error("creating the dev key", "err", err)
				return
			}
			base := "http://" + printable(d.ln.Addr())
			banner(out, base, mr.Addr(), c, cfg.ResolveAnyHost)
			if ready != nil {
				ready(d, c.Token)
			}
		},
	})
}

func printable(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func banner(out io.Writer, base, redisAddr string, c keys.Created, anyHost bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nlinkhop dev mode: API and worker in this one process, on an embedded in-memory Redis.\n")
	fmt.Fprintf(&b, "Everything is lost when you stop it (Ctrl-C). Private targets are allowed. Not for production.\n\n")
	fmt.Fprintf(&b, "  API:             %s\n", base)
	fmt.Fprintf(&b, "  Embedded Redis:  redis://%s/0\n", redisAddr)
	fmt.Fprintf(&b, "  API key:         %s\n", c.Token)
	fmt.Fprintf(&b, "  Webhook secret:  %s\n", c.WebhookSecret())
	fmt.Fprintf(&b, "  Demo shortener:  http://%s/<anything> redirects to https://example.com/<anything>\n", demoHost)
	if anyHost {
		fmt.Fprintf(&b, "  Any-host mode:   on: links on any host are resolved (and fetched, from this machine)\n")
	} else {
		fmt.Fprintf(&b, "  Any-host mode:   off: only providers' links (GET /v1/providers); start with -any-host to try any link\n")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "Try it:\n  curl -sS -X POST %s/v1/resolve -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"url\":\"http://%s/hello\"}'\n", base, c.Token, demoHost)
	fmt.Fprintf(&b, "Then poll the poll_url it returns:\n  curl -sS %s/v1/jobs/JOB_ID -H 'Authorization: Bearer %s'\n\n", base, c.Token)
	fmt.Fprintf(&b, "Or with the command line (docs/cli.md), from another shell in this directory:\n  export LINKHOP_URL=%s LINKHOP_API_KEY=%s && go run ./cmd/linkhop resolve http://%s/hello\n\n", base, c.Token, demoHost)
	_, _ = io.WriteString(out, b.String())
}

// demoShortener answers every path with a 301 to the same path on example.com, like a
// shortener would.
func demoShortener() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.com"+r.URL.Path, http.StatusMovedPermanently)
	})
}
