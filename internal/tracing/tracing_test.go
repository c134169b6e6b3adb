package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestEnabled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false},
	} {
		if got := Enabled(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }); got != tc.want {
			t.Errorf("Enabled(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// TestOn: a recording provider turns On, the no-op one turns it off again. Not parallel: it
// installs the global provider (and leaves the no-op one, as the package starts with).
func TestOn(t *testing.T) {
	if On() {
		t.Fatal("On before any Install")
	}
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	Install(tp)
	if !On() {
		t.Error("On is false with a recording provider installed")
	}
	Install(noop.NewTracerProvider())
	if On() {
		t.Error("On is true with the no-op provider installed")
	}
}

func TestInjectExtract(t *testing.T) {
	t.Parallel()
	if m := Inject(context.Background()); m != nil {
		t.Errorf("Inject without a span = %v, want nil (payloads unchanged when tracing is off)", m)
	}
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("t").Start(context.Background(), "x")
	defer span.End()
	m := Inject(ctx)
	if m["traceparent"] == "" {
		t.Fatalf("Inject = %v", m)
	}
	got := Extract(context.Background(), m)
	if sc := spanContextOf(got); sc.TraceID() != span.SpanContext().TraceID() {
		t.Errorf("Extract lost the trace: %v", sc)
	}
}

func spanContextOf(ctx context.Context) trace.SpanContext { return trace.SpanContextFromContext(ctx) }
