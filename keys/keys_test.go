package keys

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/linkhop/linkhop/internal/redistest"
)

func ptr[T any](v T) *T { return &v }

func TestCreateAuthenticate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	s := NewStore(rdb)
	c, err := s.Create(ctx, CreateParams{Name: "agency", DailyQuota: ptr[int64](100)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Token, TokenPrefix) || !strings.HasPrefix(c.ID, IDPrefix) {
		t.Fatalf("bad shapes: %q %q", c.Token, c.ID)
	}
	if id, ok := ParseToken(c.Token); !ok || id != c.ID {
		t.Fatalf("ParseToken(%q) = %q, %v", c.Token, id, ok)
	}
	sec := c.WebhookSecret()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sec, SecretPrefix))
	if !strings.HasPrefix(sec, SecretPrefix) || err != nil || len(raw) != 32 {
		t.Fatalf("webhook secret %q: %v (%d bytes)", sec, err, len(raw))
	}
	// Only the digest is stored.
	all, _ := rdb.HGetAll(ctx, RecordKey(c.ID)).Result()
	for f, v := range all {
		if strings.Contains(v, c.Token) || strings.Contains(v, strings.TrimPrefix(c.Token, TokenPrefix)) {
			t.Fatalf("field %s stores the key in clear", f)
		}
	}
	k, err := s.Authenticate(ctx, c.Token)
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "agency" || k.RateLimitPerMinute != 60 || *k.DailyQuota != 100 || k.Credits != nil || !k.HasScope(ScopeResolve) {
		t.Fatalf("unexpected key %+v", k)
	}

	bad := []string{"", "sk_live_", c.Token + "x", strings.Replace(c.Token, "sk_live_", "sk_test_", 1),
		c.Token[:len(c.Token)-1] + flip(c.Token[len(c.Token)-1]), "Bearer " + c.Token}
	for _, tok := range bad {
		if _, err := s.Authenticate(ctx, tok); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Authenticate(%q) = %v, want ErrInvalidKey", tok, err)
		}
	}
	if _, err := s.Revoke(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, c.Token); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("revoked key authenticated: %v", err)
	}
}

// TestCheckRequest: a record read as RequestFields only authenticates like the whole record
// and gives the same scopes, limits and balance; a wrong digest, a revoked key, a missing
// record and a corrupt limit are refused as Check refuses them.
func TestCheckRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.New(t)
	s := NewStore(rdb)
	c, err := s.Create(ctx, CreateParams{Name: "lean", Scopes: []string{ScopeResolve}, DailyQuota: ptr[int64](7), Credits: ptr[int64](3)})
	if err != nil {
		t.Fatal(err)
	}
	read := func() map[string]string {
		vals, err := rdb.HMGet(ctx, RecordKey(c.ID), RequestFields...).Result()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for i, v := range vals {
			if v, ok := v.(string); ok {
				m[RequestFields[i]] = v
			}
		}
		return m
	}
	full, err := s.Authenticate(ctx, c.Token)
	if err != nil {
		t.Fatal(err)
	}
	k, err := CheckRequest(c.ID, Digest(c.Token), read())
	if err != nil {
		t.Fatal(err)
	}
	if k.ID != full.ID || !slices.Equal(k.Scopes, full.Scopes) || k.RateLimitPerMinute != full.RateLimitPerMinute ||
		*k.DailyQuota != *full.DailyQuota || *k.Credits != *full.Credits || k.RevokedAt != nil {
		t.Errorf("CheckRequest = %+v, want the request fields of %+v", k, full)
	}
	if _, err := CheckRequest(c.ID, Digest(c.Token+"x"), read()); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("wrong digest: %v", err)
	}
	if _, err := CheckRequest(c.ID, Digest(c.Token), map[string]string{}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("no record: %v", err)
	}
	bad := read()
	bad[FieldRateLimit] = "many"
	if _, err := CheckRequest(c.ID, Digest(c.Token), bad); err == nil || errors.Is(err, ErrInvalidKey) {
		t.Errorf("corrupt rate limit: %v, want a decoding error", err)
	}
	if _, err := s.Revoke(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckRequest(c.ID, Digest(c.Token), read()); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("revoked key: %v", err)
	}
}

func flip(b byte) string {
	if b == 'a' {
		return "b"
	}
	return "a"
}

func TestUpdateListRotate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewStore(redistest.New(t))
	a, _ := s.Create(ctx, CreateParams{Name: "a", Credits: ptr[int64](5)})
	b, _ := s.Create(ctx, CreateParams{Name: "b", Scopes: []string{}, RateLimit: ptr(0)})
	k, err := s.Update(ctx, a.ID, UpdateParams{RateLimit: ptr(5), DailyQuota: Optional{Set: true, Value: 7}, Credits: Optional{Set: true, Null: true}})
	if err != nil {
		t.Fatal(err)
	}
	if k.RateLimitPerMinute != 5 || k.DailyQuota == nil || *k.DailyQuota != 7 || k.Credits != nil {
		t.Fatalf("update: %+v", k)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if list[1].HasScope(ScopeResolve) || list[1].RateLimitPerMinute != 0 {
		t.Errorf("b = %+v", list[1])
	}
	old := a.WebhookSecret()
	r, err := s.RotateWebhookSecret(ctx, a.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got := r.SigningSecrets(time.Now())
	if len(got) != 2 || got[1] != old || got[0] == old {
		t.Fatalf("secrets during grace = %v", got)
	}
	if got := r.SigningSecrets(time.Now().Add(2 * time.Hour)); len(got) != 1 {
		t.Fatalf("secrets after grace = %v", got)
	}
	for name, err := range map[string]error{
		"update unknown": func() error { _, err := s.Update(ctx, "key_aaaaaaaaaaaaaaaa", UpdateParams{}); return err }(),
		"revoke bad id":  func() error { _, err := s.Revoke(ctx, "nope"); return err }(),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, tc := range map[string]struct {
		p     CreateParams
		field string
	}{
		"no name":          {CreateParams{}, "name"},
		"bad scope":        {CreateParams{Name: "x", Scopes: []string{"admin"}}, "scopes"},
		"negative limit":   {CreateParams{Name: "x", RateLimit: ptr(-1)}, "rate_limit_per_minute"},
		"negative quota":   {CreateParams{Name: "x", DailyQuota: ptr[int64](-1)}, "daily_quota"},
		"negative credits": {CreateParams{Name: "x", Credits: ptr[int64](-1)}, "credits"},
	} {
		_, err := s.Create(ctx, tc.p)
		var ae *ArgumentError
		if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &ae) || ae.Field != tc.field {
			t.Errorf("%s: %v, want an ArgumentError for %s", name, err, tc.field)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("sk_live_abcdefghijklmnop_" + strings.Repeat("A", 43))
	f.Add("sk_live_")
	f.Add("sk_live_abc_def")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseToken(s)
		if ok && (!ValidID(id) || !strings.HasPrefix(s, TokenPrefix)) {
			t.Fatalf("accepted %q as %q", s, id)
		}
	})
}

func TestCreateNormalises(t *testing.T) {
	t.Parallel()
	s := NewStore(redistest.New(t))
	c, err := s.Create(context.Background(), CreateParams{Name: strings.Repeat("é", 200), Scopes: []string{"resolve", "resolve"}})
	if err != nil {
		t.Fatalf("200 characters refused: %v", err)
	}
	if len(c.Scopes) != 1 {
		t.Errorf("scopes %v", c.Scopes)
	}
	if _, err := s.Create(context.Background(), CreateParams{Name: "x", RateLimit: ptr(1 << 40)}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("huge rate limit: %v", err)
	}
}

// TestScriptNamesTheRecordsFields: Script gives other packages' Lua the field names the
// record is written with, and refuses a name the record does not have.
func TestScriptNamesTheRecordsFields(t *testing.T) {
	t.Parallel()
	s := NewStore(redistest.New(t))
	c, err := s.Create(context.Background(), CreateParams{Name: "x", DailyQuota: ptr[int64](5), Credits: ptr[int64](7)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.rdb.Eval(context.Background(), Script(`return {
		redis.call('HEXISTS', KEYS[1], {{.Hash}}), redis.call('HGET', KEYS[1], {{.RateLimit}}),
		redis.call('HGET', KEYS[1], {{.DailyQuota}}), redis.call('HGET', KEYS[1], {{.Credits}}),
		redis.call('HEXISTS', KEYS[1], {{.RevokedAt}}), redis.call('HGET', KEYS[1], {{.Scopes}})}`), []string{RecordKey(c.ID)}).Slice()
	if err != nil {
		t.Fatal(err)
	}
	want := []any{int64(1), "60", "5", "7", int64(1), ScopeResolve}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fields read through Script (-want +got):\n%s", diff)
	}
	defer func() {
		if recover() == nil {
			t.Error("Script accepted a field the record does not have")
		}
	}()
	Script(`return redis.call('HGET', KEYS[1], {{.Balance}})`)
}

// TestHasScopeLua: the scripts' has_scope answers as Key.HasScope does on the record's
// stored scopes, whatever the field holds.
func TestHasScopeLua(t *testing.T) {
	t.Parallel()
	rdb := redistest.New(t)
	ctx := context.Background()
	for _, field := range []string{"", "resolve", "a,resolve", "resolve,b", "resolver", "xresolve", "a,b", ",resolve", "a,,b", "absent"} {
		for _, scope := range []string{ScopeResolve, "a", ""} {
			if err := rdb.Del(ctx, "k").Err(); err != nil {
				t.Fatal(err)
			}
			if field != "absent" {
				if err := rdb.HSet(ctx, "k", FieldScopes, field).Err(); err != nil {
					t.Fatal(err)
				}
			}
			got, err := rdb.Eval(ctx, HasScopeLua+Script(`
return has_scope(redis.call('HGET', KEYS[1], {{.Scopes}}), ARGV[1]) and 1 or 0`), []string{"k"}, scope).Int()
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]string{FieldRateLimit: "0"}
			if field != "absent" {
				m[FieldScopes] = field
			}
			var k Key
			if err := decodeRequestFields(&k, m); err != nil {
				t.Fatal(err)
			}
			if want := k.HasScope(scope); (got == 1) != want {
				t.Errorf("field %q, scope %q: Lua %v, HasScope %v", field, scope, got == 1, want)
			}
		}
	}
}
