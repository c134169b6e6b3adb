package httpapi_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/tracing"
	"github.com/linkhop/linkhop/keys"
)

// TestTracingFollowsAJob: with tracing on, one trace holds the API request, the worker's run,
// a span per hop and the webhook attempt, and the receiver gets its traceparent; no span
// carries the link's query string (docs/operations.md#tracing).
//
// Not parallel: it installs the global tracer provider, and restores a no-op one before the
// parallel tests of the package start.
func TestTracingFollowsAJob(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Install(tp)
	t.Cleanup(func() {
		_ = tp.Shutdown(t.Context())
		tracing.Install(noop.NewTracerProvider())
	})

	rcv := newHookReceiver(t, 0)
	e := newEnv(t, envOptions{worker: true, tweakCfg: func(c *config.Config) {
		c.AllowPrivateTargets = true // the receiver listens on 127.0.0.1 over plain http
	}})
	_, tok := e.key(keys.CreateParams{})
	r := e.do("POST", "/v1/resolve", tok, map[string]any{"url": "http://sho.rt/trace-me?secret=s3cr3t", "webhook_url": rcv.URL + "/hook?token=t0k3n"})
	if r.status != http.StatusAccepted {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	id := r.body["job_id"].(string)
	e.waitJob(tok, id)
	e.waitWebhook(tok, id, "delivered")

	// The webhook span ends just after the receiver answered; give the worker a moment.
	var byName map[string][]tracetest.SpanStub
	deadline := time.Now().Add(5 * time.Second)
	for {
		byName = map[string][]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			byName[s.Name] = append(byName[s.Name], s)
		}
		if len(byName["webhook attempt"]) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	api := byName["POST /v1/resolve"]
	if len(api) != 1 {
		t.Fatalf("API spans %d; spans: %v", len(api), names(byName))
	}
	traceID := api[0].SpanContext.TraceID()
	for _, name := range []string{"resolve job", "hop start", "hop http", "webhook attempt"} {
		found := false
		for _, s := range byName[name] {
			found = found || s.SpanContext.TraceID() == traceID
		}
		if !found {
			t.Errorf("no %q span in the request's trace; spans: %v", name, names(byName))
		}
	}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() != traceID {
			continue
		}
		for _, a := range s.Attributes {
			if v := a.Value.String(); strings.Contains(v, "s3cr3t") || strings.Contains(v, "t0k3n") {
				t.Errorf("span %q attribute %s carries a query string: %q", s.Name, a.Key, v)
			}
		}
	}
	headers, _ := rcv.got()
	if len(headers) == 0 || !strings.Contains(headers[0].Get("Traceparent"), traceID.String()) {
		t.Errorf("the receiver's traceparent %q is not in trace %s", headers[0].Get("Traceparent"), traceID)
	}
}

func names(m map[string][]tracetest.SpanStub) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	return out
}
