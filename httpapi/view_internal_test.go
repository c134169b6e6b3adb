package httpapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/linkhop/linkhop/internal/jsonstr/jsonstrtest"
	"github.com/linkhop/linkhop/internal/stamp"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/resolve"
	"github.com/linkhop/linkhop/webhooks"
)

// jobView and viewOf are how a poll's body was built before appendJobView: the view as a
// struct, encoded by encoding/json. They stay here as the reference appendJobView must match
// byte for byte.
type jobView struct {
	JobID          string        `json:"job_id"`
	Status         jobs.Status   `json:"status"`
	URL            string        `json:"url"`
	TargetURL      *string       `json:"target_url"`
	Provider       *string       `json:"provider"`
	Tier           *string       `json:"tier"`
	Error          *string       `json:"error"`
	ErrorDetail    *string       `json:"error_detail"`
	CreditsCharged int64         `json:"credits_charged"`
	Balance        *int64        `json:"balance"`
	CreatedAt      string        `json:"created_at"`
	UpdatedAt      string        `json:"updated_at"`
	CompletedAt    *string       `json:"completed_at"`
	Hops           []resolve.Hop `json:"hops"`
	Webhook        *webhookView  `json:"webhook"`
}

func viewOf(r jobs.Record, balance *int64) jobView {
	v := jobView{
		JobID: r.ID, Status: r.Status, URL: r.URL, TargetURL: r.TargetURL, Tier: tierPtr(r.Tier),
		Error: r.Error, ErrorDetail: r.ErrorDetail, CreditsCharged: r.CreditsCharged, Balance: balance,
		CreatedAt: stamp.Format(r.CreatedAt), UpdatedAt: stamp.Format(r.UpdatedAt), CompletedAt: stamp.FormatPtr(r.CompletedAt),
		Hops: r.Hops, Webhook: webhookViewOf(r.Webhook),
	}
	if r.Provider != "" {
		v.Provider = &r.Provider
	}
	if v.Hops == nil {
		v.Hops = []resolve.Hop{}
	}
	return v
}

// encoded is what writeJSON sends for v.
func encoded(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func randTime(rng *rand.Rand) time.Time {
	if rng.IntN(8) == 0 {
		return time.Time{}
	}
	zone := time.FixedZone("z", (rng.IntN(25)-12)*3600)
	return time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(zone)
}

func randRecord(rng *rand.Rand) jobs.Record {
	str := func() *string {
		if rng.IntN(2) == 0 {
			return nil
		}
		s := jsonstrtest.String(rng)
		return &s
	}
	tm := func() *time.Time {
		if rng.IntN(3) == 0 {
			return nil
		}
		t := randTime(rng)
		return &t
	}
	num := func() *int {
		if rng.IntN(2) == 0 {
			return nil
		}
		n := rng.IntN(1000) - 100
		return &n
	}
	r := jobs.Record{
		ID: jsonstrtest.String(rng), KeyID: "key_x", Status: []jobs.Status{jobs.StatusQueued, jobs.StatusRunning, jobs.StatusDone, jobs.StatusFailed, jobs.StatusInvalid, "weird<"}[rng.IntN(6)],
		URL: jsonstrtest.String(rng), WebhookURL: jsonstrtest.String(rng), IdempotencyKey: jsonstrtest.String(rng), TargetURL: str(),
		Provider: []string{"", "short", jsonstrtest.String(rng)}[rng.IntN(3)], Tier: []string{"", resolve.TierStandard, resolve.TierPremium, "other"}[rng.IntN(4)],
		Error: str(), ErrorDetail: str(), CreditsCharged: rng.Int64N(5) - 1, CreditsHeld: rng.Int64N(3),
		CreatedAt: randTime(rng), UpdatedAt: randTime(rng), CompletedAt: tm(), Task: jsonstrtest.String(rng), Reaps: rng.IntN(3),
	}
	switch rng.IntN(3) {
	case 0: // nil hops
	case 1:
		r.Hops = []resolve.Hop{}
	default:
		for range 1 + rng.IntN(4) {
			r.Hops = append(r.Hops, resolve.Hop{URL: jsonstrtest.String(rng), Status: num(), Kind: jsonstrtest.String(rng)})
		}
	}
	if rng.IntN(2) == 0 {
		r.Webhook = &webhooks.State{
			URL: jsonstrtest.String(rng), Status: jsonstrtest.String(rng), Attempts: rng.IntN(9), LastAttemptAt: tm(), LastStatusCode: num(),
			LastError: str(), NextAttemptAt: tm(), Generation: rng.IntN(3),
		}
	}
	return r
}

// plainRecord is a record as most polls find it, which appendPlainView renders without decoding:
// queued or running, strings of plain ASCII, times in UTC, no hops or webhook state yet; now
// and then with one thing that sends it the decoding way.
func plainRecord(rng *rand.Rand) jobs.Record {
	plain := func() string {
		var b strings.Builder
		for range rng.IntN(30) {
			c := byte(0x20 + rng.IntN(0x5f))
			if c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				c = 'x'
			}
			b.WriteByte(c)
		}
		return b.String()
	}
	utc := func() time.Time {
		t := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()
		switch rng.IntN(4) {
		case 0:
			return t.Truncate(time.Millisecond)
		case 1:
			return t.Truncate(time.Second)
		case 2:
			if rng.IntN(4) == 0 {
				return time.Time{}
			}
		}
		return t
	}
	r := jobs.Record{
		ID: plain(), KeyID: plain(), Status: []jobs.Status{jobs.StatusQueued, jobs.StatusRunning, jobs.StatusDone}[rng.IntN(3)],
		URL: plain(), Provider: []string{"", "short", plain()}[rng.IntN(3)], Tier: []string{"", resolve.TierStandard, resolve.TierPremium, "other"}[rng.IntN(4)],
		CreditsCharged: rng.Int64N(2000) - 1000, CreditsHeld: rng.Int64N(3), Attempts: rng.IntN(2), Reaps: rng.IntN(2),
		CreatedAt: utc(), UpdatedAt: utc(),
	}
	if rng.IntN(2) == 0 {
		r.WebhookURL, r.IdempotencyKey, r.Task, r.WebhookTask = plain(), plain(), plain(), plain()
	}
	if rng.IntN(2) == 0 {
		r.Hops = []resolve.Hop{}
	}
	if rng.IntN(3) == 0 {
		s := plain()
		r.TargetURL, r.Error, r.ErrorDetail = &s, &s, &s
	}
	if rng.IntN(3) == 0 {
		t := utc()
		r.CompletedAt = &t
	}
	switch rng.IntN(12) {
	case 0:
		r.URL += "<&>"
	case 1:
		r.ID += "ü"
	case 2:
		r.CreatedAt = r.CreatedAt.In(time.FixedZone("z", 3600))
	case 3:
		r.Hops = []resolve.Hop{{URL: plain(), Kind: "redirect"}}
	case 4:
		r.Webhook = &webhooks.State{URL: plain()}
	case 5:
		r.Resume = &resolve.Continuation{}
	}
	return r
}

// TestJobViewMatchesEncoding: the poll's body is byte for byte what the view struct encoded by
// encoding/json was, for records of every shape (nulls, zero times, any time zone, strings
// that need escaping, invalid UTF-8, hops and webhook states or none), alone and in a list.
func TestJobViewMatchesEncoding(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	plainViews := 0
	for i := range 6000 {
		rec := randRecord(rng)
		if i%2 == 1 {
			rec = plainRecord(rng)
		}
		var bal *int64
		if rng.IntN(2) == 0 {
			n := rng.Int64N(1000) - 10
			bal = &n
		}
		raw, err := json.Marshal(&rec)
		if err != nil {
			t.Fatal(err)
		}
		// What a poll read before: the stored JSON decoded into a Record.
		var back jobs.Record
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		want := encoded(t, viewOf(back, bal))
		got, err := appendJobView(nil, raw, bal)
		if err != nil {
			t.Fatal(err)
		}
		if got = append(got, '\n'); !bytes.Equal(got, want) {
			t.Fatalf("record %d (%s):\ngot  %s\nwant %s", i, raw, got, want)
		}
		if _, ok := appendPlainView(nil, raw, bal); ok {
			plainViews++
		}
	}
	if plainViews < 1500 {
		t.Errorf("only %d of the records took appendPlainView: the generator misses it", plainViews)
	}
}

// FuzzPlainView: whatever the stored bytes, appendPlainView either declines or writes what
// decoding the record writes.
func FuzzPlainView(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		r := plainRecord(rng)
		raw, _ := json.Marshal(&r)
		f.Add(raw, int64(7))
	}
	f.Add([]byte(`{"job_id":"a","job_id":"b"}`), int64(-1))
	f.Fuzz(func(t *testing.T, raw []byte, bal int64) {
		got, ok := appendPlainView([]byte("x"), raw, &bal)
		if !ok {
			if string(got) != "x" {
				t.Fatalf("declined but appended %q", got)
			}
			return
		}
		want, err := appendDecodedView([]byte("x"), raw, &bal)
		if err != nil {
			t.Fatalf("%s: rendered as %s, but decoding fails: %v", raw, got, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s:\ngot  %s\nwant %s", raw, got, want)
		}
	})
}

func TestJobViewOfACorruptRecord(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"", "{", `{"job_id":1}`, `{"created_at":"yesterday"}`, "[]"} {
		if b, err := appendJobView([]byte("x"), []byte(raw), nil); err == nil {
			t.Errorf("appendJobView(%q) = %s, want an error", raw, b)
		}
	}
}

// BenchmarkJobView compares a poll's rendering of a queued job's record (appendPlainView's way)
// with decoding the record first, and with the decode and encode both replaced:
// go test -run '^$' -bench JobView ./httpapi
func BenchmarkJobView(b *testing.B) {
	now := time.Now()
	raw, _ := json.Marshal(&jobs.Record{
		ID: "0b4c1b52-4a6e-4b8e-9d1e-3c2f1a0b9c8d", KeyID: "key_abcdefghijklmnop", Status: jobs.StatusQueued,
		URL: "http://sho.rt/abc123", Provider: "short", Tier: resolve.TierStandard, CreatedAt: now, UpdatedAt: now,
		CreditsHeld: 1, Hops: []resolve.Hop{},
	})
	bal := int64(42)
	b.Run("appendJobView", func(b *testing.B) {
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf, _ = appendJobView(buf[:0], raw, &bal)
		}
	})
	b.Run("appendDecodedView", func(b *testing.B) {
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf, _ = appendDecodedView(buf[:0], raw, &bal)
		}
	})
	b.Run("decode+encode", func(b *testing.B) {
		for b.Loop() {
			rec, _ := jobs.Decode(raw, nil)
			_ = json.NewEncoder(&bytes.Buffer{}).Encode(viewOf(rec, &bal))
		}
	})
}

// TestNewRequestID: 16 hex digits, a valid id to echo, a different one each time.
func TestNewRequestID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		id := newRequestID()
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" || !validRequestID(id) {
			t.Fatalf("request id %q", id)
		}
		if seen[id] {
			t.Fatalf("request id %q twice", id)
		}
		seen[id] = true
	}
}
