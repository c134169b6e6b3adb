package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/linkhop/linkhop/internal/jsonstr/jsonstrtest"
	"github.com/linkhop/linkhop/internal/recjson"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// TestRecordCodecMatchesEncodingJSON: records are stored and read through internal/recjson,
// which must write exactly encoding/json's bytes (appendPlainView, appendNewRecord and records
// written by earlier versions depend on it) and read records exactly as encoding/json reads
// them, whatever their fields hold.
func TestRecordCodecMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 8))
	str := func() string { return jsonstrtest.String(rng) }
	ptr := func() *string {
		if rng.IntN(2) == 0 {
			return nil
		}
		s := str()
		return &s
	}
	num := func() *int {
		if rng.IntN(2) == 0 {
			return nil
		}
		n := rng.IntN(600)
		return &n
	}
	refused := 0
	for i := range 4000 {
		at, done := randTime(rng), randTime(rng)
		r := &Record{
			ID: str(), KeyID: str(), Status: Status(str()), URL: str(), WebhookURL: str(), IdempotencyKey: str(),
			TargetURL: ptr(), Provider: str(), Tier: str(), Error: ptr(), ErrorDetail: ptr(),
			CreditsCharged: rng.Int64N(9) - 4, CreditsHeld: rng.Int64N(9) - 4, Attempts: rng.IntN(4),
			CreatedAt: randTime(rng), UpdatedAt: randTime(rng), Task: str(), Reaps: rng.IntN(3), WebhookTask: str(),
		}
		if rng.IntN(2) == 0 {
			r.CompletedAt = &done
		}
		for range rng.IntN(4) {
			r.Hops = append(r.Hops, resolve.Hop{URL: str(), Status: num(), Kind: str()})
		}
		if rng.IntN(2) == 0 {
			r.Webhook = &webhooks.State{URL: str(), Status: str(), Attempts: rng.IntN(9), LastAttemptAt: &at,
				LastStatusCode: num(), LastError: ptr(), Generation: rng.IntN(3)}
		}
		if rng.IntN(3) == 0 {
			// Continuation's members are the resolver's own types: made from JSON.
			c := fmt.Sprintf(`{"hops":[{"url":%q,"status":302,"kind":"http"}],"seen":[%q],`+
				`"cookies":[{"url":%q,"cookies":[{"Name":%q,"Value":%q,"Expires":"2026-12-01T10:00:00Z","MaxAge":%d,"HttpOnly":true}]}],`+
				`"form":{"action":%q,"fields":[{"n":%q,"v":%q}],"referer":%q},"ready_at":"2026-12-01T10:00:05.5+02:00"}`,
				"http://a/", "x", "http://a/", "sid", "v1", rng.IntN(100), "http://a/go", "_csrf", "t0k", "http://a/")
			r.Resume = &resolve.Continuation{}
			if err := json.Unmarshal([]byte(c), r.Resume); err != nil {
				t.Fatal(err)
			}
		}

		want, werr := json.Marshal(r)
		if werr != nil {
			// A time encoding/json refuses (a year outside 0–9999, an offset of a day or
			// more): recjson writes it, and linkhop never stores one (its times are the clock's).
			refused++
			continue
		}
		got, gerr := recjson.Marshal(r)
		if gerr != nil || !bytes.Equal(got, want) {
			t.Fatalf("record %d: recjson wrote\n%s (%v)\nencoding/json\n%s", i, got, gerr, want)
		}
		// Read back, and read what a damaged or hand-edited record would be.
		inputs := [][]byte{want, want[:rng.IntN(len(want))], bytes.ToUpper(want),
			[]byte(strings.Replace(string(want), `"status"`, `"STATUS"`, 1)),
			[]byte(strings.Replace(string(want), `{`, `{"job_id":"first",`, 1))}
		for k, in := range inputs {
			var a, b Record
			aerr := json.Unmarshal(in, &a)
			berr := recjson.Unmarshal(in, &b)
			if (aerr == nil) != (berr == nil) {
				t.Fatalf("record %d, input %d %s: encoding/json says %v, recjson %v", i, k, in, aerr, berr)
			}
			if aerr != nil {
				continue
			}
			ab, _ := json.Marshal(&a)
			bb, _ := json.Marshal(&b)
			if !bytes.Equal(ab, bb) {
				t.Fatalf("record %d, input %d %s: read as\n%s\nencoding/json reads\n%s", i, k, in, bb, ab)
			}
		}
	}
	if refused > 2000 {
		t.Errorf("%d of 4000 records refused by encoding/json: the generator tests too few", refused)
	}
}
