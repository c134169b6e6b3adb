package jobs

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/linkhop/linkhop/internal/jsonstr/jsonstrtest"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

func randTime(rng *rand.Rand) time.Time {
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("x", 5*3600+30*60), time.FixedZone("y", -(9*3600 + 17)),
		time.FixedZone("edge", 24*3600-1), time.FixedZone("edge-", -(24*3600 - 1))}
	t := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9))
	switch rng.IntN(40) {
	case 0:
		t = time.Time{}
	case 1:
		t = t.Truncate(time.Second)
	case 2, 3, 4, 5, 6, 7, 8, 9, 10, 11:
		t = t.Truncate(time.Millisecond)
	// Times RFC 3339 cannot hold, which encoding/json refuses.
	case 12:
		t = time.Date(10000+rng.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC)
	case 13:
		t = time.Date(-1-rng.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC)
	case 14:
		return t.In(time.FixedZone("over", 24*3600+rng.IntN(3600)))
	case 15:
		return t.In(time.FixedZone("under", -24*3600-rng.IntN(3600)))
	}
	return t.In(zones[rng.IntN(len(zones))])
}

// TestAppendNewRecordMatchesMarshal: a batch's new records are encoded by hand, byte for byte as
// json.Marshal encodes them, and any record outside the new-record shape is left to json.Marshal.
func TestAppendNewRecordMatchesMarshal(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string { return jsonstrtest.String(rng) }
	opt := func() string {
		if rng.IntN(2) == 0 {
			return ""
		}
		return str()
	}
	var fast, slow int
	for i := range 5000 {
		r := &Record{
			ID: str(), KeyID: str(), Status: Status(str()), URL: str(), WebhookURL: opt(), IdempotencyKey: opt(),
			Provider: opt(), Tier: opt(), CreditsCharged: rng.Int64N(5) - 2, CreditsHeld: rng.Int64N(5) - 2,
			CreatedAt: randTime(rng), UpdatedAt: randTime(rng),
		}
		if rng.IntN(2) == 0 {
			r.Hops = []resolve.Hop{}
		}
		// Now and then one field a worker sets later.
		s, n, at := str(), 1+rng.IntN(3), randTime(rng)
		switch rng.IntN(24) {
		case 0:
			r.TargetURL = &s
		case 1:
			r.Error = &s
		case 2:
			r.ErrorDetail = &s
		case 3:
			r.Attempts = n
		case 4:
			r.CompletedAt = &at
		case 5:
			r.Hops = []resolve.Hop{{URL: s, Kind: "redirect"}}
		case 6:
			r.Webhook = &webhooks.State{URL: s}
		case 7:
			r.Resume = &resolve.Continuation{}
		case 8:
			r.Task = s + "x"
		case 9:
			r.Reaps = n
		case 10:
			r.WebhookTask = s + "x"
		}
		want, werr := json.Marshal(r)
		got, ok := appendNewRecord([]byte("prefix"), r)
		if !ok {
			slow++
			if string(got) != "prefix" {
				t.Fatalf("record %d: refused but appended %q", i, got)
			}
			continue
		}
		fast++
		if werr != nil {
			t.Fatalf("record %d: encoded by hand as %s, json.Marshal refuses it: %v", i, got, werr)
		}
		if string(got) != "prefix"+string(want) {
			t.Fatalf("record %d:\n got %s\nwant prefix%s", i, got, want)
		}
	}
	if fast < 2000 || slow < 1000 {
		t.Errorf("%d records by hand, %d left to json.Marshal: the generator misses one path", fast, slow)
	}
}
