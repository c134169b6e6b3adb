package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineWriter hands the first line written to it to a channel.
type lineWriter struct {
	once sync.Once
	c    chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { w.c <- string(p) })
	return len(p), nil
}

// TestServeRef runs the references of scripts/vegeta-check.sh as -serve runs them.
func TestServeRef(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := startRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.close()
	t.Setenv("REDIS_URL", rs.url())
	if err := serveRef(ctx, "api", "127.0.0.1:0", io.Discard); !errors.Is(err, errServeMode) {
		t.Errorf("unknown mode: %v, want errServeMode", err)
	}
	if err := serveRef(ctx, servePollRef, "127.0.0.1:-1", io.Discard); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("a bad address: %v, want a listen error", err)
	}
	for _, tc := range []struct {
		mode, method, path, body string
		want                     int
	}{
		{serveFloor, http.MethodPost, "/v1/resolve", `{"url":"https://bit.ly/x"}`, http.StatusAccepted},
		{serveFloor, http.MethodPost, "/v1/resolve", `{`, http.StatusBadRequest},
		{servePollRef, http.MethodGet, "/v1/jobs/nope", "", http.StatusNotFound},
	} {
		t.Run(tc.mode+" "+tc.body, func(t *testing.T) {
			sctx, stop := context.WithCancel(ctx)
			w := &lineWriter{c: make(chan string, 1)}
			done := make(chan error, 1)
			go func() { done <- serveRef(sctx, tc.mode, "127.0.0.1:0", w) }()
			var base string
			select {
			case line := <-w.c:
				base = strings.TrimSpace(line[strings.LastIndex(line, " ")+1:])
			case err := <-done:
				stop()
				t.Fatalf("serveRef: %v", err)
			}
			req, _ := http.NewRequestWithContext(ctx, tc.method, base+tc.path, strings.NewReader(tc.body))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.method, tc.path, res.StatusCode, tc.want)
			}
			http.DefaultClient.CloseIdleConnections()
			stop()
			if err := <-done; err != nil {
				t.Errorf("serveRef ended with %v", err)
			}
		})
	}
}
