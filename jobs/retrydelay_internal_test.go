package jobs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/linkhop/linkhop/webhooks"
)

// WebhookRetryDelay: a task with a place in the Line comes back through asynq only a backstop
// after it (the Line brings it back at its place); one without, after its wait; anything else
// backs off.
func TestWebhookRetryDelay(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("jobs: %w", err) }
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"held back with a place", &webhooks.HeldBackError{Wait: 300 * time.Millisecond, Placed: true}, 300*time.Millisecond + placedBackstop},
		{"held back without one", &webhooks.HeldBackError{Wait: 300 * time.Millisecond}, 300 * time.Millisecond},
		{"held back for no time", &webhooks.HeldBackError{}, time.Millisecond},
		{"not due, placed in line", wrap(&notDueError{wait: time.Second, lined: true}), time.Second + placedBackstop},
		{"not due", &notDueError{wait: time.Second}, time.Second},
		{"retry placed in line", &retryError{err: errors.New("x"), delay: 2 * time.Second, lined: true}, 2*time.Second + placedBackstop},
		{"retry", &retryError{err: errors.New("x"), delay: 2 * time.Second}, 2 * time.Second},
		{"retry without a delay", &retryError{err: errors.New("x")}, 8 * time.Second},
		{"anything else", errors.New("redis down"), 8 * time.Second},
	}
	for _, tt := range tests {
		if got := WebhookRetryDelay(3, tt.err, nil); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
