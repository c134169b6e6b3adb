// Package tracing is linkhop's OpenTelemetry tracing (docs/operations.md#tracing): off unless
// the standard OTEL_* variables name an exporter, then one trace follows a job from the API
// request through its task, every hop of the resolve and every webhook attempt.
//
// Code records spans through the global tracer provider, which is a no-op until Setup installs
// a real one, so nothing here costs more than a branch when tracing is off.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/linkhop/linkhop/internal/buildinfo"
)

// Name is the instrumentation scope of linkhop's own spans.
const Name = "github.com/linkhop/linkhop"

// Tracer is linkhop's tracer on the global provider.
func Tracer() trace.Tracer { return otel.Tracer(Name) }

// Enabled reports whether the environment asks for traces: OTEL_TRACES_EXPORTER other than
// "none", or an OTLP endpoint, and OTEL_SDK_DISABLED not true.
func Enabled(lookup func(string) (string, bool)) bool {
	if v, _ := lookup("OTEL_SDK_DISABLED"); strings.EqualFold(strings.TrimSpace(v), "true") {
		return false
	}
	if v, ok := lookup("OTEL_TRACES_EXPORTER"); ok && strings.TrimSpace(v) != "" {
		return strings.TrimSpace(v) != "none"
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if v, ok := lookup(k); ok && strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}

// Setup installs a tracer provider exporting as the OTEL_* variables say (OTLP over HTTP or
// gRPC, per OTEL_EXPORTER_OTLP_PROTOCOL), with W3C trace context propagation, and returns its
// shutdown, which flushes what is buffered. When the environment asks for no traces, it
// installs nothing and shutdown does nothing.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if !Enabled(os.LookupEnv) {
		return noop, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return noop, fmt.Errorf("tracing: %w", err)
	}
	if name, ok := os.LookupEnv("OTEL_SERVICE_NAME"); ok && strings.TrimSpace(name) != "" {
		service = strings.TrimSpace(name) // the operator's name wins, as the SDK documents
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(buildinfo.Version)))
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	Install(tp)
	return tp.Shutdown, nil
}

// propagator carries trace context between processes: W3C trace context and baggage.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Install makes tp the global provider, with W3C trace context and baggage propagation (tests
// install one with an in-memory exporter).
func Install(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	_, isNoop := tp.(noop.TracerProvider)
	on.Store(!isNoop)
}

// on is set while a recording provider is installed.
var on atomic.Bool

// On reports whether a tracer provider other than a no-op one is installed, so that a caller
// may skip instrumentation whose only product is spans (the API's HTTP middleware costs several
// µs per request even with the no-op provider: it wraps the body and the writer and builds its
// attributes).
func On() bool { return on.Load() }

// Inject returns the trace context of ctx as a map to carry in a task payload; nil when ctx
// has no recording span (tracing off), so payloads stay as they were.
func Inject(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	m := propagation.MapCarrier{}
	propagator.Inject(ctx, m)
	if len(m) == 0 {
		return nil
	}
	return m
}

// Extract returns ctx carrying the trace context of a task payload's map.
func Extract(ctx context.Context, carrier map[string]string) context.Context {
	if len(carrier) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(carrier))
}

// InjectHeader writes the trace context of ctx into an outgoing request's headers
// (traceparent), when there is one.
func InjectHeader(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}
