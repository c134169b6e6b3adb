package jobs

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPlanRecordSplit: the record a Plan sends, and the place in it the script puts
// "credits_held" for a key with a balance, make the bytes json.Marshal makes of the record,
// with "credits_held" for a key with a balance and as sent for a key without one.
func TestPlanRecordSplit(t *testing.T) {
	t.Parallel()
	q := &Queue{store: &Store{retention: time.Hour}}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, r := range []Record{
		{ID: "a", KeyID: "key_a", URL: "https://sho.rt/a", Provider: "short", Tier: "standard", CreatedAt: at},
		{ID: "b", KeyID: "key_b", URL: `https://sho.rt/"credits_charged":0?x=1`, WebhookURL: "https://h.example/x",
			IdempotencyKey: `"credits_charged":0`, Tier: "premium", CreatedAt: at},
		{ID: "c", KeyID: "key_c", URL: "https://any.example/", CreatedAt: at},
	} {
		for _, cost := range []int64{1, 2} {
			p := q.Plan(context.Background(), &r, cost, "resolve", "k")
			rec, at := string(p.call.Args[0].([]byte)), p.call.Args[1].(int)
			head, tail := rec[:at], rec[at:]
			withHeld := r
			withHeld.CreditsHeld = cost
			want, err := json.Marshal(withHeld)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(string(want), head+`,"credits_held":`+strconv.FormatInt(cost, 10)+tail); d != "" {
				t.Errorf("%s, a key with a balance (-json.Marshal +joined):\n%s", r.ID, d)
			}
			withHeld.CreditsHeld = 0
			want, _ = json.Marshal(withHeld)
			if d := cmp.Diff(string(want), head+tail); d != "" {
				t.Errorf("%s, a key without a balance (-json.Marshal +joined):\n%s", r.ID, d)
			}
		}
	}
}
