package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkhop/linkhop/problem"
	"github.com/linkhop/linkhop/resolve"
)

// BenchmarkBatchParse is the per-item work of a 100-item batch before Redis: reading the body
// and checking each item. go test -run '^$' -bench BatchParse ./httpapi
func BenchmarkBatchParse(b *testing.B) {
	reg, err := resolve.NewRegistry([]resolve.Provider{{ID: "short", Label: "Short", Hosts: []string{"sho.rt"}, Tier: resolve.TierStandard}})
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Deps: Deps{Registry: reg}, validate: newValidator()}
	type item struct {
		URL string `json:"url"`
	}
	var body struct {
		Items []item `json:"items"`
	}
	for i := range 100 {
		body.Items = append(body.Items, item{URL: "http://sho.rt/b" + strconv.Itoa(i)})
	}
	raw, _ := json.Marshal(body)
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/resolve/batch", bytes.NewReader(raw))
		r.Header.Set("Content-Type", "application/json")
		reqs, p := s.parseBatch(httptest.NewRecorder(), r)
		if p != nil {
			b.Fatal(p)
		}
		for _, req := range reqs {
			if _, p := s.checkResolve(req, ""); p != nil {
				b.Fatal(p)
			}
		}
	}
}

// slowItem is how parseBatch reads an item that plainItem does not take.
func slowItem(t []byte) (batchItem, bool) {
	if exactKeys(t, &batchItem{}) != nil {
		return batchItem{}, false
	}
	var bi batchItem
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.DisallowUnknownFields()
	return bi, dec.Decode(&bi) == nil
}

func samePtr(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

// checkPlainItem: whatever plainItem takes, the strict reading takes too, with the same values.
func checkPlainItem(t *testing.T, item string) {
	t.Helper()
	got, ok := plainItem([]byte(item))
	if !ok {
		return
	}
	// parseResolve hands it whole bodies, not only elements of a decoded array.
	if !json.Valid([]byte(item)) {
		t.Fatalf("plainItem took %q, which is not JSON", item)
	}
	want, wok := slowItem([]byte(item))
	if !wok {
		t.Fatalf("plainItem took %s, which the strict reading refuses", item)
	}
	if !samePtr(got.URL, want.URL) || !samePtr(got.WebhookURL, want.WebhookURL) || !samePtr(got.IdempotencyKey, want.IdempotencyKey) {
		t.Fatalf("%s: plainItem %+v, strict reading %+v", item, got, want)
	}
}

var itemSeeds = []string{
	`{"url":"http://sho.rt/a"}`, ` { "url" : "http://sho.rt/a" , "webhook_url" : null } `, `{}`,
	`{"url":"http://sho.rt/a","url":"http://sho.rt/b"}`, `{"URL":"x"}`, `{"url":"a\"b"}`, `{"url":"\u0061"}`,
	`{"url":1}`, `{"url":"é"}`, `{"url":null,"idempotency_key":"k","webhook_url":"https://h/x"}`,
	`{"extra":"x"}`, `{"url":"x",}`, `{"url":{"a":1}}`, `{"url":"x"} `, `{"u\u0072l":"x"}`, `{"url":nullx}`, `{"url":"x"}}`, `{"url":"x"`,
	`{"url" "x"}`, `{,"url":"x"}`, `{"url":"x"} {}`, `{"url":nul}`,
}

// TestPlainItem: the quick reading of a batch item takes the plain items and agrees with the
// strict one on each of them, and leaves every other item to it.
func TestPlainItem(t *testing.T) {
	t.Parallel()
	for _, s := range itemSeeds {
		checkPlainItem(t, s)
	}
	for _, tc := range []struct {
		item string
		ok   bool
	}{
		{`{"url":"http://sho.rt/a"}`, true},
		{` { "url" : "http://sho.rt/a" , "webhook_url" : null } `, true},
		{`{"url":"http://sho.rt/a","url":"http://sho.rt/b"}`, false},
		{`{"URL":"x"}`, false},
		{`{"url":"a\"b"}`, false},
		{`{"url":"é"}`, false},
		{`{"url":1}`, false},
	} {
		if _, ok := plainItem([]byte(tc.item)); ok != tc.ok {
			t.Errorf("plainItem(%s) ok = %v, want %v", tc.item, ok, tc.ok)
		}
	}
}

func FuzzPlainItem(f *testing.F) {
	for _, s := range itemSeeds {
		f.Add(s)
	}
	f.Fuzz(checkPlainItem)
}

// TestPlainRequest: the quick check of a request that is a url alone passes only what the
// validator passes, and takes the common good one.
func TestPlainRequest(t *testing.T) {
	t.Parallel()
	v := newValidator()
	long := "https://sho.rt/" + strings.Repeat("é", 2048-len("https://sho.rt/"))
	tooLong := long + "x"
	hook, key := "https://h.example/x", "k"
	for _, req := range []resolveRequest{
		{URL: "http://sho.rt/a"}, {URL: ""}, {URL: "sho.rt/a"}, {URL: "http://u:p@sho.rt/a"}, {URL: "http://sho.rt:99999/a"},
		{URL: "http://sho.rt/a b"}, {URL: "mailto:x@y"}, {URL: long}, {URL: tooLong}, {URL: "http:///a"},
		{URL: "http://sho.rt/a", WebhookURL: &hook}, {URL: "http://sho.rt/a", IdempotencyKey: &key},
	} {
		u, ok := plainRequest(req)
		valid := v.Struct(&req) == nil
		if ok && (!valid || u == nil || u.String() == "") {
			t.Errorf("plainRequest(%.40q…) took a request the validator refuses (%v)", req.URL, valid)
		}
		if !ok && valid && req.WebhookURL == nil && req.IdempotencyKey == nil {
			t.Errorf("plainRequest(%.40q…) left a valid url alone to the validator", req.URL)
		}
	}
}

// TestBatchAnswerMatchesEncoding: the batch's body is byte for byte what encoding/json wrote
// for its entries.
func TestBatchAnswerMatchesEncoding(t *testing.T) {
	t.Parallel()
	id, odd := "0b4c1b52-4a6e-4b8e-9d1e-3c2f1a0b9c8d", "<odd & \"id\">"
	bal := int64(3)
	slots := []batchSlot{
		{entry: queuedEntry(id, 0)}, {entry: queuedEntry(id, 12345)}, {entry: queuedEntry(odd, 7)},
		{entry: cachedResponse{Status: "done", URL: "http://sho.rt/a?b&c", TargetURL: "https://example.com/<x>", Cached: true, Balance: &bal}},
		{entry: problem.New(problem.RateLimited, "later").WithRetryAfter(1500 * time.Millisecond).Entry()},
		{entry: problem.New(problem.OutOfCredits, "poor").WithBalance(0).Entry()},
		{entry: invalid("items[6].url", "must be a valid URL").Entry()},
	}
	got, err := appendBatchAnswer(nil, slots)
	if err != nil {
		t.Fatal(err)
	}
	items := make([]any, len(slots))
	for i := range slots {
		items[i] = slots[i].entry
	}
	want := encoded(t, struct {
		Items []any `json:"items"`
	}{items})
	if got = append(got, '\n'); !bytes.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// checkPlainBatch: whatever plainBatch takes is JSON that the strict reading takes too, with the
// same items and webhook_url.
func checkPlainBatch(t *testing.T, body string) {
	t.Helper()
	req, plain, ok := plainBatch([]byte(body))
	if !ok {
		return
	}
	if !json.Valid([]byte(body)) {
		t.Fatalf("plainBatch took %q, which is not JSON", body)
	}
	var strict batchRequest
	if p := decodeStrict([]byte(body), &strict); p != nil {
		t.Fatalf("plainBatch took %s, which the strict reading refuses: %v", body, p.Detail)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(strict.Items, &items); err != nil || len(items) != len(plain) {
		t.Fatalf("%s: %d plain items, strict %d (%v)", body, len(plain), len(items), err)
	}
	if !samePtr(req.WebhookURL, strict.WebhookURL) {
		t.Fatalf("%s: webhook_url %v, strict %v", body, req.WebhookURL, strict.WebhookURL)
	}
	for i, it := range items {
		want, wok := slowItem(bytes.TrimSpace(it))
		got := plain[i]
		if !wok || !samePtr(got.URL, want.URL) || !samePtr(got.WebhookURL, want.WebhookURL) || !samePtr(got.IdempotencyKey, want.IdempotencyKey) {
			t.Fatalf("%s: item %d plain %+v, strict %+v (%v)", body, i, got, want, wok)
		}
	}
}

var batchSeeds = []string{
	`{"items":[{"url":"http://sho.rt/a"},{"url":"http://sho.rt/b","idempotency_key":"k"}]}`,
	` { "webhook_url" : "https://h/x" , "items" : [ { } ] } `, `{"items":[],"webhook_url":null}`, `{"items":[]}x`,
	`{"items":[{"url":"a"}],"items":[]}`, `{"webhook_url":"x"}`, `{"items":[{"url":"a"},]}`, `{"items":[1]}`,
	`{"items":{"url":"a"}}`, `{"Items":[]}`, `{}`, `{"items":[{"url":"a"}]`, `{"items":null}`,
}

func TestPlainBatch(t *testing.T) {
	t.Parallel()
	for _, s := range batchSeeds {
		checkPlainBatch(t, s)
	}
	for _, tc := range []struct {
		body string
		n    int // items, -1: not taken
	}{
		{batchSeeds[0], 2}, {batchSeeds[1], 1}, {batchSeeds[2], 0}, {batchSeeds[3], -1}, {batchSeeds[4], -1},
		{batchSeeds[5], -1}, {`{"items":[{"url":"é"}]}`, -1}, {`{}`, -1},
	} {
		_, plain, ok := plainBatch([]byte(tc.body))
		if n := len(plain); !ok && tc.n != -1 || ok && n != tc.n {
			t.Errorf("plainBatch(%s) = %d items, %v; want %d", tc.body, n, ok, tc.n)
		}
	}
}

func FuzzPlainBatch(f *testing.F) {
	for _, s := range batchSeeds {
		f.Add(s)
	}
	f.Fuzz(checkPlainBatch)
}
