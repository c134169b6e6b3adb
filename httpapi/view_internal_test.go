package httpapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

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

// nasty are strings that take every branch of encoding/json's string escaping.
var nasty = []string{
	"", "plain", "https://sho.rt/a?b=c&d=<e>", `quote " and \ backslash`, "tab\tnl\ncr\r\b\f\x00\x1f",
	"ünïcödé ✓ 😀", "line\u2028sep\u2029", "bad utf-8 \xff\xfe", "\x7f", "/slashes/", "<script>",
}

func randString(rng *rand.Rand) string {
	if rng.IntN(3) == 0 {
		return nasty[rng.IntN(len(nasty))]
	}
	var b strings.Builder
	for range rng.IntN(30) {
		switch rng.IntN(10) {
		case 0:
			b.WriteRune(rune(rng.IntN(0x80)))
		case 1:
			b.WriteRune(rune(rng.IntN(0x3000)))
		case 2:
			b.WriteByte(byte(rng.IntN(256))) // possibly invalid UTF-8
		default:
			b.WriteByte("abcxyz019-_./:?=%"[rng.IntN(17)])
		}
	}
	return b.String()
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
		s := randString(rng)
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
		ID: randString(rng), KeyID: "key_x", Status: []jobs.Status{jobs.StatusQueued, jobs.StatusRunning, jobs.StatusDone, jobs.StatusFailed, jobs.StatusInvalid, "weird<"}[rng.IntN(6)],
		URL: randString(rng), WebhookURL: randString(rng), IdempotencyKey: randString(rng), TargetURL: str(),
		Provider: []string{"", "short", randString(rng)}[rng.IntN(3)], Tier: []string{"", resolve.TierStandard, resolve.TierPremium, "other"}[rng.IntN(4)],
		Error: str(), ErrorDetail: str(), CreditsCharged: rng.Int64N(5) - 1, CreditsHeld: rng.Int64N(3),
		CreatedAt: randTime(rng), UpdatedAt: randTime(rng), CompletedAt: tm(), Task: randString(rng), Reaps: rng.IntN(3),
	}
	switch rng.IntN(3) {
	case 0: // nil hops
	case 1:
		r.Hops = []resolve.Hop{}
	default:
		for range 1 + rng.IntN(4) {
			r.Hops = append(r.Hops, resolve.Hop{URL: randString(rng), Status: num(), Kind: randString(rng)})
		}
	}
	if rng.IntN(2) == 0 {
		r.Webhook = &webhooks.State{
			URL: randString(rng), Status: randString(rng), Attempts: rng.IntN(9), LastAttemptAt: tm(), LastStatusCode: num(),
			LastError: str(), NextAttemptAt: tm(), Generation: rng.IntN(3),
		}
	}
	return r
}

// TestJobViewMatchesEncoding: the poll's body is byte for byte what the view struct encoded by
// encoding/json was, for records of every shape (nulls, zero times, any time zone, strings
// that need escaping, invalid UTF-8, hops and webhook states or none), alone and in a list.
func TestJobViewMatchesEncoding(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		rec := randRecord(rng)
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
	}
}

func TestJobViewOfACorruptRecord(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"", "{", `{"job_id":1}`, `{"created_at":"yesterday"}`, "[]"} {
		if b, err := appendJobView([]byte("x"), []byte(raw), nil); err == nil {
			t.Errorf("appendJobView(%q) = %s, want an error", raw, b)
		}
	}
}

// BenchmarkJobView compares a poll's rendering of a queued job's record with the decode and
// encode it replaced: go test -run '^$' -bench JobView ./httpapi
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
