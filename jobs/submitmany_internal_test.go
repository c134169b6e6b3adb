package jobs

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/linkhop/linkhop/internal/jsonstr/jsonstrtest"
	"github.com/linkhop/linkhop/internal/tracing"
)

// TestTaskMessagesMatchResolveTaskMessage: the task messages a batch writes by hand are
// resolveTaskMessage's, byte for byte: ids and links of every kind (escapes, invalid UTF-8, no
// link at all), with a trace context and without.
func TestTaskMessagesMatchResolveTaskMessage(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 19))
	traced := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled,
	}))
	if tracing.Inject(traced) == nil {
		t.Fatal("no trace context to carry")
	}
	opts := TaskOptions{MaxAttempts: 3, Timeout: 90 * time.Second}
	for _, ctx := range []context.Context{context.Background(), traced} {
		for _, keyID := range []string{"key_m", jsonstrtest.String(rng)} {
			var tm taskMessages
			var buf []byte
			for i := range 2000 {
				id, url := uuid.NewString(), jsonstrtest.String(rng)
				if i%5 == 0 {
					id = jsonstrtest.String(rng)
				}
				got, err := tm.append(ctx, buf[:0], id, keyID, url, opts)
				if err != nil {
					t.Fatal(err)
				}
				buf = got
				want, err := resolveTaskMessage(ctx, id, keyID, url, opts)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("id %q, url %q:\n got %q\nwant %q", id, url, got, want)
				}
			}
		}
	}
}
