package httpapi

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAdminAuthorized holds the admin token check to a plain model of the two accepted
// forms: "Bearer <token>" (any case, surrounding spaces ignored) and Basic authentication
// whose password is the token.
func FuzzAdminAuthorized(f *testing.F) {
	const token = "s3cret-token"
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	for _, s := range []string{
		"", "Bearer " + token, "bearer " + token, "BEARER  " + token + " ", "Bearer", "Bearer ",
		"Bearer " + token + "x", "Bearer x" + token, token, "Token " + token,
		basic("admin", token), basic("", token), basic("admin", "nope"), basic(token, ""),
		"Basic !!!", "Basic " + token, "basic " + base64.StdEncoding.EncodeToString([]byte(":"+token)),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/admin/keys", nil)
		r.Header.Set("Authorization", header)
		got := adminAuthorized(r, token)

		want := false
		scheme, rest, _ := strings.Cut(header, " ")
		if strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(rest) != "" {
			want = strings.TrimSpace(rest) == token
		} else if len(header) >= 6 && strings.ToLower(header[:6]) == "basic " && isASCII(header[:6]) {
			if b, err := base64.StdEncoding.DecodeString(header[6:]); err == nil {
				_, pass, ok := strings.Cut(string(b), ":")
				want = ok && pass == token
			}
		}
		if got != want {
			t.Fatalf("adminAuthorized(%q) = %v, want %v", header, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FuzzAdminKeyBodies feeds arbitrary bodies to the admin API's decoders: they must never
// panic, and what they accept must say what the JSON said (absent, null or a number).
func FuzzAdminKeyBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"a"}`, `{"name":"a","scopes":["resolve"],"rate_limit_per_minute":0,"daily_quota":null,"credits":5}`,
		`{"daily_quota":null}`, `{"credits":1e3}`, `{"rate_limit_per_minute":null}`, `{"grace":"24h"}`,
		`{"grace":null}`, `{}`, `[]`, `{"name":"a"} x`, `{"daily_quota":"1"}`, `{"credits":-1}`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		decode := func(dst any) bool {
			r := httptest.NewRequest(http.MethodPost, "/admin/keys", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			return readJSON(httptest.NewRecorder(), r, dst) == nil
		}
		var c createKeyRequest
		decode(&c)
		var u updateKeyRequest
		if decode(&u) {
			for name, o := range map[string]nullableInt{"daily_quota": u.DailyQuota, "credits": u.Credits, "rate_limit_per_minute": u.RateLimitPerMinute} {
				if o.Null && (!o.Set || o.Value != 0) || !o.Set && (o.Null || o.Value != 0) {
					t.Fatalf("%s: inconsistent %+v for body %q", name, o.Optional, body)
				}
			}
		}
		var g rotateKeyRequest
		if decode(&g) && g.Grace != nil {
			if d, err := parseGrace(*g.Grace); err == nil && d < 0 {
				t.Fatalf("parseGrace(%q) = %v", *g.Grace, d)
			}
		}
	})
}
