package webhooks

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ptr[T any](v T) *T { return &v }

// The event's bytes are fixed by docs/webhooks.md#the-event: field order, nulls, millisecond UTC times,
// and '&' left unescaped. The first vector's body is that shape, written by hand.
func TestEventBodyMatchesVector(t *testing.T) {
	t.Parallel()
	v := loadVectors(t)[0]
	e := Event{
		Event:          EventFor("done"),
		CreatedAt:      time.Date(2026, 6, 5, 14, 0, 0, 123_456_789, time.FixedZone("CEST", 2*3600)),
		JobID:          "0b6f4a52-3c1e-4d2a-9a57-6f0d8e1c2b3a",
		Status:         "done",
		TargetURL:      ptr("https://example.com/landing?a=1&b=2"),
		Provider:       ptr("bitly"),
		Tier:           ptr("standard"),
		CreditsCharged: 1,
		Balance:        ptr(int64(41)),
	}
	got, err := e.Body()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(v.Body, string(got)); d != "" {
		t.Errorf("body (-want +got):\n%s", d)
	}
	// json.Marshal goes through MarshalJSON too; it escapes '&' but is the same JSON.
	viaJSON, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(viaJSON, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &b); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a, b); d != "" {
		t.Errorf("json.Marshal differs (-marshal +body):\n%s", d)
	}
}

func TestEventFor(t *testing.T) {
	t.Parallel()
	for status, want := range map[string]string{"done": EventResolveDone, "failed": EventResolveFailed, "invalid": EventResolveFailed} {
		if got := EventFor(status); got != want {
			t.Errorf("EventFor(%q) = %q, want %q", status, got, want)
		}
	}
}

func TestStateJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 6, 5, 12, 0, 0, 7_000_000, time.UTC)
	tests := []struct {
		name string
		in   State
		want string
	}{
		{
			name: "new",
			in:   *NewState("https://hooks.example/x", at),
			want: `{"url":"https://hooks.example/x","status":"pending","attempts":0,"last_attempt_at":null,"last_status_code":null,"last_error":null,"next_attempt_at":"2026-06-05T12:00:00.007Z","generation":1}`,
		},
		{
			name: "failed attempt",
			in: State{URL: "https://hooks.example/x?a=1&b=2", Status: StatusFailed, Attempts: 4,
				LastAttemptAt: ptr(at.In(time.FixedZone("X", -5*3600))), LastStatusCode: ptr(500), LastError: ptr("receiver answered 500 Internal Server Error")},
			want: `{"url":"https://hooks.example/x?a=1&b=2","status":"failed","attempts":4,"last_attempt_at":"2026-06-05T12:00:00.007Z","last_status_code":500,"last_error":"receiver answered 500 Internal Server Error","next_attempt_at":null}`,
		},
		{
			name: "held back",
			in:   State{URL: "https://hooks.example/x", Status: StatusPending, NextAttemptAt: &at, Generation: 1, Held: true},
			want: `{"url":"https://hooks.example/x","status":"pending","attempts":0,"last_attempt_at":null,"last_status_code":null,"last_error":null,"next_attempt_at":"2026-06-05T12:00:00.007Z","generation":1,"held":true}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			// json.Marshal re-escapes '&'; compare as JSON values.
			var g, w any
			_ = json.Unmarshal(got, &g)
			_ = json.Unmarshal([]byte(tt.want), &w)
			if d := cmp.Diff(w, g); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			// Also through a pointer field, as the job record holds it.
			rec := struct {
				Webhook *State `json:"webhook"`
			}{&tt.in}
			if _, err := json.Marshal(rec); err != nil {
				t.Fatal(err)
			}
			// And back: the record is read from Redis with the default decoder.
			var back State
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(back)
			if string(again) != string(got) {
				t.Errorf("round trip: %s != %s", again, got)
			}
		})
	}
}

func TestStateRedeliver(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 6, 5, 12, 0, 0, 0, time.UTC)
	// Generation 0: a record from before generations existed counts as the first.
	s := State{URL: "https://h.example", Status: StatusFailed, Attempts: 4, LastStatusCode: ptr(500), LastError: ptr("x"), Held: true}
	if s.Pending() || s.CurrentGeneration() != 1 {
		t.Fatal("failed state is pending, or not generation 1")
	}
	s.Redeliver(at)
	want := State{URL: "https://h.example", Status: StatusPending, Attempts: 0, LastStatusCode: ptr(500), LastError: ptr("x"), NextAttemptAt: &at, Generation: 2}
	if d := cmp.Diff(want, s); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if !s.Pending() {
		t.Error("redelivered state is not pending")
	}
	var nilState *State
	if nilState.Pending() {
		t.Error("nil state is pending")
	}
}
