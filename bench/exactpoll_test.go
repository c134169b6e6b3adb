package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/jobs"
	"github.com/linkhop/linkhop/keys"
)

// TestExactPollHandler: row 3c's reference does the work it claims: a token that does not
// match its key is refused, every poll is counted against the key's per-minute limit (the
// third of a limit of 3 is the last admitted, the fourth is refused), and an admitted poll
// carries the rate-limit headers and the stored job.
func TestExactPollHandler(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.New(t)
	limit := 3
	k, err := keys.NewStore(rdb).Create(ctx, keys.CreateParams{Name: "exact", RateLimit: &limit})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := jobs.Record{ID: uuid.NewString(), KeyID: k.ID, Status: jobs.StatusQueued, URL: "http://sho.rt/x",
		CreatedAt: now, UpdatedAt: now}
	if err := jobs.NewStore(rdb, time.Hour).Create(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	stored, err := rdb.Get(ctx, jobs.RecordKey(k.ID, rec.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	h, err := exactPollHandler(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	poll := func(token, id string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/jobs/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	// A token of this key's id with another secret: its shape is right, its digest is not.
	forged := keys.TokenPrefix + strings.TrimPrefix(k.ID, keys.IDPrefix) + "_" + strings.Repeat("a", 43)
	if id, ok := keys.ParseToken(forged); !ok || id != k.ID {
		t.Fatalf("the forged token does not parse to the key's id: %q, %v", id, ok)
	}
	if res, _ := poll(forged, rec.ID); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("a token of another secret: %d, want 401", res.StatusCode)
	}
	res, body := poll(k.Token, rec.ID)
	if res.StatusCode != http.StatusOK || body != stored {
		t.Fatalf("first poll: %d %q, want 200 and the stored record", res.StatusCode, body)
	}
	reset, _ := strconv.ParseInt(res.Header.Get("X-RateLimit-Reset"), 10, 64)
	if res.Header.Get("X-RateLimit-Limit") != "3" || res.Header.Get("X-RateLimit-Remaining") != "2" ||
		reset < now.Unix()+58 || reset > now.Unix()+62 || res.Header.Get("RateLimit") == "" || res.Header.Get("RateLimit-Policy") == "" {
		t.Errorf("first poll's headers: %v", res.Header)
	}
	if res, _ := poll(k.Token, uuid.NewString()); res.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown job: %d, want 404", res.StatusCode)
	}
	if res, _ := poll(k.Token, rec.ID); res.StatusCode != http.StatusOK || res.Header.Get("X-RateLimit-Remaining") != "0" {
		t.Errorf("third poll: %d, remaining %q; want 200, 0", res.StatusCode, res.Header.Get("X-RateLimit-Remaining"))
	}
	if res, _ := poll(k.Token, rec.ID); res.StatusCode != http.StatusTooManyRequests {
		t.Errorf("fourth poll: %d, want 429", res.StatusCode)
	}
}
