package webhooks

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBackoffSchedule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    Policy
		n    int
		want time.Duration
	}{
		{"default retry 1", Policy{}, 1, 5 * time.Second},
		{"default retry 2", Policy{}, 2, 20 * time.Second},
		{"default retry 3", Policy{}, 3, 80 * time.Second},
		{"n below 1 counts as 1", Policy{}, 0, 5 * time.Second},
		{"short base for tests", Policy{BackoffBase: 50 * time.Millisecond}, 2, 200 * time.Millisecond},
		{"capped", Policy{}, 40, MaxBackoff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lo, hi := time.Duration(float64(tt.want)*0.8), time.Duration(float64(tt.want)*1.2)
			if tt.want == MaxBackoff {
				lo = MaxBackoff
			}
			seen := map[time.Duration]bool{}
			for range 200 {
				d := tt.p.Backoff(tt.n)
				if d < lo || d > hi {
					t.Fatalf("Backoff(%d) = %s, want within [%s, %s]", tt.n, d, lo, hi)
				}
				seen[d] = true
			}
			if tt.want != MaxBackoff && len(seen) < 2 {
				t.Errorf("no jitter: %v", seen)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	t.Parallel()
	got := DefaultPolicy()
	want := Policy{RatePerSecond: 10, MaxRetries: 3, Timeout: 30 * time.Second, BackoffBase: 5 * time.Second}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if (Policy{}).Retries() != 0 {
		t.Error("MaxRetries 0 should mean no retries, as WEBHOOK_MAX_RETRIES=0 does")
	}
	if err := (Policy{MaxRetries: -1}).Validate(); err == nil {
		t.Error("negative MaxRetries accepted")
	}
	if tt := (Policy{Timeout: time.Second}).TaskTimeout(); tt <= time.Second {
		t.Errorf("TaskTimeout %s not above the attempt timeout", tt)
	}
	if err := (Policy{Timeout: -1}).Validate(); err == nil {
		t.Error("negative timeout accepted")
	}
	if err := (Policy{}).Validate(); err != nil {
		t.Error(err)
	}
}

func status(code int) Outcome {
	o := Outcome{StatusCode: code}
	switch {
	case code >= 200 && code < 300:
		o.Delivered = true
	default:
		o.Err = &StatusError{Code: code}
		o.Permanent = code == http.StatusGone
	}
	return o
}

// The sequences, on the pure state machine: how many attempts and which final status.
func TestApplySequences(t *testing.T) {
	t.Parallel()
	p := Policy{BackoffBase: 50 * time.Millisecond, MaxRetries: DefaultMaxRetries}
	tests := []struct {
		name         string
		answers      []Outcome // the receiver's answers in order; the last repeats
		wantAttempts int
		wantStatus   string
		wantCode     int
	}{
		{"500, 500, 204 delivers on the third", []Outcome{status(500), status(500), status(204)}, 3, StatusDelivered, 204},
		{"always 500 fails after 4", []Outcome{status(500)}, 4, StatusFailed, 500},
		{"410 stops at once", []Outcome{status(410)}, 1, StatusFailed, 410},
		{"302 is a failure", []Outcome{status(302)}, 4, StatusFailed, 302},
		{"timeout then 200", []Outcome{{Err: ErrTimeout, Duration: 30 * time.Second}, status(200)}, 2, StatusDelivered, 200},
		{"first try", []Outcome{status(200)}, 1, StatusDelivered, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			at := time.Date(2026, 6, 5, 12, 0, 0, 0, time.UTC)
			s := NewState("https://h.example", at)
			for i := 0; ; i++ {
				o := tt.answers[min(i, len(tt.answers)-1)]
				s.Held = true // held back before this attempt: the attempt's own time replaces it
				delay, retry := p.Apply(s, o, at)
				if s.Held {
					t.Fatalf("after attempt %d: still marked held back", s.Attempts)
				}
				if !retry {
					break
				}
				if s.Status != StatusPending || s.NextAttemptAt == nil || !s.NextAttemptAt.Equal(at.Add(o.Duration+delay)) {
					t.Fatalf("after attempt %d: %+v, delay %s", s.Attempts, s, delay)
				}
				if s.LastError == nil || *s.LastError == "" {
					t.Fatalf("after failed attempt %d: no last_error", s.Attempts)
				}
				if i > 10 {
					t.Fatal("no end")
				}
				at = at.Add(delay)
			}
			if s.Attempts != tt.wantAttempts || s.Status != tt.wantStatus {
				t.Errorf("attempts %d status %s, want %d %s", s.Attempts, s.Status, tt.wantAttempts, tt.wantStatus)
			}
			if s.NextAttemptAt != nil {
				t.Errorf("final state has next_attempt_at %s", s.NextAttemptAt)
			}
			if tt.wantCode != 0 && (s.LastStatusCode == nil || *s.LastStatusCode != tt.wantCode) {
				t.Errorf("last_status_code %v, want %d", s.LastStatusCode, tt.wantCode)
			}
			if (s.Status == StatusDelivered) != (s.LastError == nil) {
				t.Errorf("last_error %v with status %s", s.LastError, s.Status)
			}
			if !s.LastAttemptAt.Equal(at) {
				t.Errorf("last_attempt_at %s, want %s", s.LastAttemptAt, at)
			}
		})
	}
}

func TestApplyRetryAfter(t *testing.T) {
	t.Parallel()
	p := Policy{BackoffBase: 50 * time.Millisecond, MaxRetries: DefaultMaxRetries}
	at := time.Date(2026, 6, 5, 12, 0, 0, 0, time.UTC)
	s := NewState("https://h.example", at)
	o := status(429)
	o.RetryAfter = 7 * time.Second
	delay, retry := p.Apply(s, o, at)
	if !retry || delay != 7*time.Second {
		t.Fatalf("delay %s retry %v, want the receiver's 7s", delay, retry)
	}
	o.RetryAfter = time.Hour
	if delay, _ := p.Apply(s, o, at); delay != MaxRetryAfter {
		t.Fatalf("delay %s, want the 10 min cap", delay)
	}
	// A connection error has no status code: last_status_code is null.
	if _, retry := p.Apply(s, Outcome{Err: ErrTimeout}, at); !retry || s.LastStatusCode != nil || s.Attempts != 3 {
		t.Fatalf("attempt 3: retry %v, state %+v", retry, s)
	}
	if _, retry := p.Apply(s, Outcome{Err: ErrTimeout}, at); retry || s.Status != StatusFailed || s.Attempts != 4 {
		t.Fatalf("attempt 4: retry %v, state %+v", retry, s)
	}
}
