package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/redistest"
)

// startAdminAPI runs the real api (run) on a free port against a real Redis and returns its
// base URL; the api is stopped at cleanup.
func startAdminAPI(t *testing.T, adminToken string) (string, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	cfg, err := config.Load(config.API, func(n string) (string, bool) {
		v, ok := map[string]string{
			"REDIS_URL": srv.URL(), "HTTP_ADDR": "127.0.0.1:0", "LINKHOP_ADMIN_TOKEN": adminToken,
			"SHUTDOWN_TIMEOUT": "2s",
		}[n]
		return v, ok && v != ""
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, slog.New(slog.DiscardHandler), runOptions{ready: func(d deps) { addr <- d.ln.Addr().String() }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case a := <-addr:
		return "http://" + a, srv
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the api did not start")
	}
	return "", nil
}

func adminGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestAdminWiring: the api binary serves /admin behind LINKHOP_ADMIN_TOKEN, and 404 without.
func TestAdminWiring(t *testing.T) {
	t.Parallel()
	t.Run("no token", func(t *testing.T) {
		t.Parallel()
		base, _ := startAdminAPI(t, "")
		for _, p := range []string{"/admin/keys", "/admin/queues/"} {
			if st, body := adminGet(t, base+p, "anything"); st != 404 || !strings.Contains(body, `"not_found"`) {
				t.Errorf("%s: %d %s", p, st, body)
			}
		}
	})
	t.Run("token", func(t *testing.T) {
		t.Parallel()
		base, _ := startAdminAPI(t, "tok-123")
		for _, p := range []string{"/admin/keys", "/admin/queues/"} {
			if st, _ := adminGet(t, base+p, ""); st != 401 {
				t.Errorf("%s without the token: %d", p, st)
			}
			if st, body := adminGet(t, base+p, "tok-123"); st != 200 {
				t.Errorf("%s with the token: %d %s", p, st, body)
			}
		}
	})
}

// TestQueueMetricsOnAPI: the api's /metrics carries asynq's queue sizes as linkhop_asynq_*.
func TestQueueMetricsOnAPI(t *testing.T) {
	t.Parallel()
	base, srv := startAdminAPI(t, "")
	if _, err := asynq.NewClientFromRedisClient(srv.Client(t)).Enqueue(asynq.NewTask("test:task", nil), asynq.Queue("metricsq")); err != nil {
		t.Fatal(err)
	}
	st, body := adminGet(t, base+"/metrics", "")
	if st != 200 || !strings.Contains(body, `linkhop_asynq_queue_size{queue="metricsq"} 1`) {
		t.Fatalf("/metrics: %d, no linkhop_asynq_queue_size for metricsq:\n%.2000s", st, body)
	}
}
