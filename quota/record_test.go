package quota

import (
	"context"
	"slices"
	"testing"

	"github.com/linkhop/linkhop/internal/redistest"
	"github.com/linkhop/linkhop/keys"
)

// TestAdmitReadsTheKeyRecord holds the admit script to the key record as package keys writes
// it: the digest, the per-minute limit, the daily quota and the revocation must all be read
// under the names keys owns. A script or decoder that drifts from keys' schema fails here.
//
// It runs three times: reading the whole record, reading only keys.RequestFields (HMGET; the
// script holds that list itself), and reading other named fields (the names sent along).
func TestAdmitReadsTheKeyRecord(t *testing.T) {
	t.Parallel()
	t.Run("whole record", func(t *testing.T) { t.Parallel(); testAdmitReadsTheKeyRecord(t, nil) })
	t.Run("request fields", func(t *testing.T) { t.Parallel(); testAdmitReadsTheKeyRecord(t, keys.RequestFields) })
	named := append(slices.Clone(keys.RequestFields[1:]), keys.RequestFields[0]) // not the list itself: sent by name
	t.Run("named fields", func(t *testing.T) { t.Parallel(); testAdmitReadsTheKeyRecord(t, named) })
}

func testAdmitReadsTheKeyRecord(t *testing.T, fields []string) {
	ctx := context.Background()
	rdb := redistest.New(t)
	ks := keys.NewStore(rdb)
	rl, quota := 2, int64(1)
	c, err := ks.Create(ctx, keys.CreateParams{Name: "drift", RateLimit: &rl, DailyQuota: &quota})
	if err != nil {
		t.Fatal(err)
	}
	l := New(rdb)
	admit := func(token string, countDay bool) Admission {
		t.Helper()
		id, _ := keys.ParseToken(token)
		a, err := l.Admit(ctx, AdmitRequest{KeyID: id, RecordKey: keys.RecordKey(id), Digest: keys.Digest(token), CountDay: countDay, Fields: fields})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	a := admit(c.Token, true)
	if !a.Authenticated || !a.Decision.Allowed {
		t.Fatalf("first request: %+v", a)
	}
	if a.Decision.Minute.Limit != int64(rl) || a.Decision.Day == nil || a.Decision.Day.Limit != quota {
		t.Errorf("limits read from the record: minute %+v, day %+v; want %d and %d", a.Decision.Minute, a.Decision.Day, rl, quota)
	}
	check := keys.Check
	if fields != nil {
		check = keys.CheckRequest
		if len(a.Record) != 4 { // hash, scopes, rate limit, daily quota: no credits, not revoked
			t.Errorf("fields %v read as %v, want only the 4 of them the key has", fields, a.Record)
		}
	}
	if k, err := check(c.ID, keys.Digest(c.Token), a.Record); err != nil || *k.DailyQuota != quota || k.RateLimitPerMinute != rl {
		t.Errorf("the record the script returned decodes as %+v, %v", k, err)
	}
	if a := admit(c.Token, true); a.Decision.Allowed || a.Decision.Code != CodeQuotaExceeded {
		t.Errorf("second counted request: %+v, want the daily quota of the record to refuse it", a.Decision)
	}
	if a := admit(c.Token, false); !a.Decision.Allowed {
		t.Errorf("third request, not counted against the day: %+v, want it admitted", a.Decision)
	}
	if a := admit(c.Token, false); a.Decision.Allowed || a.Decision.Code != CodeRateLimited {
		t.Errorf("fourth request: %+v, want the per-minute limit of the record to refuse it", a.Decision)
	}
	if a := admit(c.Token[:len(c.Token)-1]+"x", false); a.Authenticated {
		t.Error("a wrong token was authenticated: the script does not compare the record's digest")
	}
	if _, err := ks.Revoke(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if a := admit(c.Token, false); a.Authenticated {
		t.Error("a revoked key was authenticated: the script does not read the record's revocation")
	}
}
