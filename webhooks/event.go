package webhooks

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/linkhop/linkhop/internal/stamp"
)

// Values of [State.Status].
const (
	// StatusPending: an attempt is queued, running, held back by the rate, or waiting for its
	// retry time.
	StatusPending = "pending"
	// StatusDelivered: the receiver answered 2xx in time. Terminal until a redelivery.
	StatusDelivered = "delivered"
	// StatusFailed: the retries ran out or the receiver answered 410. Terminal until a
	// redelivery.
	StatusFailed = "failed"
)

// Values of [Event.Event].
const (
	// EventResolveDone is sent for a job that ended "done".
	EventResolveDone = "resolve.done"
	// EventResolveFailed is sent for a job that ended "failed" or "invalid"; the job's status
	// and error fields tell which.
	EventResolveFailed = "resolve.failed"
)

// State is the job's "webhook" object (docs/webhooks.md#the-jobs-webhook-object), kept current by deliveries.
//
// It marshals its timestamps as RFC 3339 UTC with milliseconds. Use it as a named field of
// the job record (Webhook *webhooks.State, tagged json:"webhook"), not as an anonymous
// embedded field: its MarshalJSON would be promoted and replace the whole record's encoding.
type State struct {
	URL            string     `json:"url"`
	Status         string     `json:"status"` // pending|delivered|failed
	Attempts       int        `json:"attempts"`
	LastAttemptAt  *time.Time `json:"last_attempt_at"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      *string    `json:"last_error"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	// Generation counts the job's deliveries: 1 for the first, +1 per redelivery. It is the
	// delivery task's bookkeeping (a task of an older generation does nothing) and part of
	// the webhook-id; it is stored with the record but is not part of the API's object.
	Generation int `json:"generation,omitempty"`
	// Held says that NextAttemptAt is a held-back attempt's (when it asks again, or its place
	// in line), not a retry's time set by a failed attempt's backoff or Retry-After: a task
	// that starts before it need not wait for it, since the rate and the cap on attempts in
	// flight decide when it may go. Stored like Generation, not part of the API's object.
	Held bool `json:"held,omitempty"`
}

// NewState is the state of a delivery that has just been queued: pending, no attempts yet,
// the first attempt due at now, generation 1.
func NewState(url string, now time.Time) *State {
	next := now.UTC()
	return &State{URL: url, Status: StatusPending, NextAttemptAt: &next, Generation: 1}
}

// CurrentGeneration is Generation, with records written before it existed counting as 1.
func (s *State) CurrentGeneration() int { return max(s.Generation, 1) }

// Pending says whether a delivery is still in progress, which is when a redelivery is refused
// (409): two deliveries of one job would race on this state.
func (s *State) Pending() bool { return s != nil && s.Status == StatusPending }

// Redeliver starts a fresh delivery, the next generation: pending, attempts counted from zero
// again, the first attempt due at now. The last_* fields are kept so the previous outcome
// stays visible until the first new attempt replaces it.
func (s *State) Redeliver(now time.Time) {
	next := now.UTC()
	s.Generation = s.CurrentGeneration() + 1
	s.Status = StatusPending
	s.Attempts = 0
	s.NextAttemptAt = &next
	s.Held = false
}

// MarshalJSON writes the object with timestamps as RFC 3339 UTC milliseconds, null for the
// ones not set, in the field order of docs/webhooks.md#the-event (then generation and held,
// when set).
func (s State) MarshalJSON() ([]byte, error) {
	return marshalNoEscape(struct {
		URL            string  `json:"url"`
		Status         string  `json:"status"`
		Attempts       int     `json:"attempts"`
		LastAttemptAt  *string `json:"last_attempt_at"`
		LastStatusCode *int    `json:"last_status_code"`
		LastError      *string `json:"last_error"`
		NextAttemptAt  *string `json:"next_attempt_at"`
		Generation     int     `json:"generation,omitempty"`
		Held           bool    `json:"held,omitempty"`
	}{
		URL:            s.URL,
		Status:         s.Status,
		Attempts:       s.Attempts,
		LastAttemptAt:  stamp.FormatPtr(s.LastAttemptAt),
		LastStatusCode: s.LastStatusCode,
		LastError:      s.LastError,
		NextAttemptAt:  stamp.FormatPtr(s.NextAttemptAt),
		Generation:     s.Generation,
		Held:           s.Held,
	})
}

// Event is the delivered body (docs/webhooks.md#the-event), in the field order documented there.
//
// A delivery builds it from the finished job, so every attempt and every redelivery of one
// job sends the same bytes; only the signature headers change.
type Event struct {
	// Event is [EventResolveDone] or [EventResolveFailed].
	Event string `json:"event"`
	// CreatedAt is when the event came to be: the job's completion time.
	CreatedAt time.Time `json:"created_at"`
	JobID     string    `json:"job_id"`
	// Status is the job's terminal status: done, failed or invalid.
	Status    string  `json:"status"`
	TargetURL *string `json:"target_url"`
	Provider  *string `json:"provider"`
	// Tier is "standard", "premium" or null.
	Tier *string `json:"tier"`
	// Error is the job's error code, null when done.
	Error          *string `json:"error"`
	CreditsCharged int64   `json:"credits_charged"`
	// Balance is the key's credit balance after the job; null when the key has none.
	Balance *int64 `json:"balance"`
}

// EventFor names the event of a terminal job status: "done" is resolve.done; "failed" and
// "invalid" are resolve.failed (the event's status field keeps the difference).
func EventFor(status string) string {
	if status == "done" {
		return EventResolveDone
	}
	return EventResolveFailed
}

// MarshalJSON writes created_at as RFC 3339 UTC milliseconds.
func (e Event) MarshalJSON() ([]byte, error) {
	return marshalNoEscape(struct {
		Event          string  `json:"event"`
		CreatedAt      string  `json:"created_at"`
		JobID          string  `json:"job_id"`
		Status         string  `json:"status"`
		TargetURL      *string `json:"target_url"`
		Provider       *string `json:"provider"`
		Tier           *string `json:"tier"`
		Error          *string `json:"error"`
		CreditsCharged int64   `json:"credits_charged"`
		Balance        *int64  `json:"balance"`
	}{
		Event:          e.Event,
		CreatedAt:      stamp.Format(e.CreatedAt),
		JobID:          e.JobID,
		Status:         e.Status,
		TargetURL:      e.TargetURL,
		Provider:       e.Provider,
		Tier:           e.Tier,
		Error:          e.Error,
		CreditsCharged: e.CreditsCharged,
		Balance:        e.Balance,
	})
}

// Body is the exact bytes to send and sign: compact JSON, no trailing newline, and '&', '<',
// '>' left as they are, so a target URL with a query string reads naturally in logs.
func (e Event) Body() ([]byte, error) { return e.MarshalJSON() }

// marshalNoEscape is json.Marshal without HTML escaping and without the encoder's newline.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
