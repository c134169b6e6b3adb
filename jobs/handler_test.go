package jobs

import (
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	f := RetryDelay(time.Second)
	task := asynq.NewTask(TypeResolve, nil)
	cases := []struct {
		name   string
		n      int
		err    error
		lo, hi time.Duration
	}{
		{"first retry is base", 0, errors.New("x"), 800 * time.Millisecond, 1200 * time.Millisecond},
		{"second retry is 4x", 1, errors.New("x"), 3200 * time.Millisecond, 4800 * time.Millisecond},
		{"third retry is 16x", 2, errors.New("x"), 12800 * time.Millisecond, 19200 * time.Millisecond},
		{"provider Retry-After wins", 0, &retryError{err: errors.New("x"), delay: 7 * time.Second}, 7 * time.Second, 7 * time.Second},
		{"held back", 5, &HeldError{Delay: 300 * time.Millisecond}, 300 * time.Millisecond, 300 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 50 {
				if d := f(tc.n, tc.err, task); d < tc.lo || d > tc.hi {
					t.Fatalf("delay %v outside [%v, %v]", d, tc.lo, tc.hi)
				}
			}
		})
	}
	if !IsHeld(&HeldError{}) || IsHeld(errors.New("x")) {
		t.Error("IsHeld")
	}
}

func TestNewResolveTask(t *testing.T) {
	t.Parallel()
	task, err := NewResolveTask("job-1", "key_1", "https://sho.rt/x", TaskOptions{MaxAttempts: 3, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != TypeResolve || string(task.Payload()) != `{"job_id":"job-1","key_id":"key_1","url":"https://sho.rt/x"}` {
		t.Errorf("task %s %s", task.Type(), task.Payload())
	}
	// Without a URL the payload is as before the URL was added.
	if task, _ := NewResolveTask("job-1", "key_1", "", TaskOptions{}); string(task.Payload()) != `{"job_id":"job-1","key_id":"key_1"}` {
		t.Errorf("task %s", task.Payload())
	}
}
