package webhooks

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type vector struct {
	Name             string   `json:"name"`
	Secrets          []string `json:"secrets"`
	MsgID            string   `json:"msg_id"`
	Timestamp        int64    `json:"timestamp"`
	Body             string   `json:"body"`
	LinkhopSignature string   `json:"linkhop_signature"`
	WebhookSignature string   `json:"webhook_signature"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/signature-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return doc.Vectors
}

// The vectors were computed with an independent implementation (Python's hmac), so this
// checks Sign against the algorithm as written down, not against itself.
func TestSignMatchesVectors(t *testing.T) {
	t.Parallel()
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			h := http.Header{}
			if err := Sign(h, v.Secrets, v.MsgID, time.Unix(v.Timestamp, 0), []byte(v.Body)); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"Content-Type":            "application/json",
				"User-Agent":              UserAgent,
				"Linkhop-Signature":       v.LinkhopSignature,
				"X-Linkskipper-Signature": v.LinkhopSignature,
				"Webhook-Id":              v.MsgID,
				"Webhook-Timestamp":       jsonInt(v.Timestamp),
				"Webhook-Signature":       v.WebhookSignature,
			}
			got := map[string]string{}
			for k := range h {
				got[k] = h.Get(k)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("headers (-want +got):\n%s", d)
			}
		})
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestVerifyVectors(t *testing.T) {
	t.Parallel()
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			now := time.Unix(v.Timestamp, 0).Add(90 * time.Second)
			h := http.Header{}
			h.Set(HeaderWebhookID, v.MsgID)
			h.Set(HeaderWebhookTimestamp, jsonInt(v.Timestamp))
			h.Set(HeaderWebhookSignature, v.WebhookSignature)
			// Every secret of a rotation verifies on its own, in both schemes.
			for _, secret := range v.Secrets {
				if err := VerifyLinkhop(secret, v.LinkhopSignature, []byte(v.Body), now); err != nil {
					t.Errorf("VerifyLinkhop: %v", err)
				}
				if err := VerifyStandard(secret, h, []byte(v.Body), now); err != nil {
					t.Errorf("VerifyStandard: %v", err)
				}
			}
		})
	}
}

// During a rotation the new secret signs first and the previous one last, because the Link
// Skipper SDK verifier reads only the last v1 entry (docs/webhooks.md#signatures).
func TestSignRotationOrder(t *testing.T) {
	t.Parallel()
	newS, oldS := mustSecret(t), mustSecret(t)
	body := []byte(`{"event":"resolve.done"}`)
	ts := time.Unix(1_780_000_000, 0)
	h := http.Header{}
	if err := Sign(h, []string{newS, oldS}, "msg_1", ts, body); err != nil {
		t.Fatal(err)
	}
	_, sigs, err := ParseLinkhopHeader(h.Get(HeaderLinkhopSignature))
	if err != nil || len(sigs) != 2 {
		t.Fatalf("parse: %v, %d sigs", err, len(sigs))
	}
	if d := cmp.Diff([][]byte{linkhopMAC(newS, ts.Unix(), body), linkhopMAC(oldS, ts.Unix(), body)}, sigs); d != "" {
		t.Errorf("linkhop order (-want +got):\n%s", d)
	}
	std, err := ParseStandardHeader(h.Get(HeaderWebhookSignature))
	if err != nil || len(std) != 2 {
		t.Fatalf("parse: %v, %d sigs", err, len(std))
	}
	kNew, _ := standardKey(newS)
	kOld, _ := standardKey(oldS)
	if d := cmp.Diff([][]byte{standardMAC(kNew, "msg_1", ts.Unix(), body), standardMAC(kOld, "msg_1", ts.Unix(), body)}, std); d != "" {
		t.Errorf("standard order (-want +got):\n%s", d)
	}
}

// mustSecret makes a secret the way package keys does: whsec_ and base64 of 32 random bytes.
func mustSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

func TestVerify(t *testing.T) {
	t.Parallel()
	secret, other := mustSecret(t), mustSecret(t)
	body := []byte(`{"event":"resolve.done","job_id":"j1"}`)
	signedAt := time.Unix(1_780_000_000, 0)
	sign := func(secrets ...string) http.Header {
		h := http.Header{}
		if err := Sign(h, secrets, "msg_j1_1", signedAt, body); err != nil {
			t.Fatal(err)
		}
		return h
	}
	tests := []struct {
		name    string
		secret  string
		h       http.Header
		body    []byte
		now     time.Time
		wantErr error
	}{
		{"valid", secret, sign(secret), body, signedAt, nil},
		{"valid at the edge of the tolerance, late", secret, sign(secret), body, signedAt.Add(Tolerance), nil},
		{"valid at the edge of the tolerance, early clock", secret, sign(secret), body, signedAt.Add(-Tolerance), nil},
		{"old secret during rotation", other, sign(secret, other), body, signedAt, nil},
		{"too old", secret, sign(secret), body, signedAt.Add(Tolerance + time.Second), ErrTimestampOutOfTolerance},
		{"from the future", secret, sign(secret), body, signedAt.Add(-Tolerance - time.Second), ErrTimestampOutOfTolerance},
		{"tampered body", secret, sign(secret), []byte(`{"event":"resolve.done","job_id":"j2"}`), signedAt, ErrSignatureMismatch},
		{"wrong secret", other, sign(secret), body, signedAt, ErrSignatureMismatch},
		{"no headers", secret, http.Header{}, body, signedAt, ErrMalformedHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			errL := VerifyLinkhop(tt.secret, tt.h.Get(HeaderLinkhopSignature), tt.body, tt.now)
			if !errors.Is(errL, tt.wantErr) || (tt.wantErr == nil) != (errL == nil) {
				t.Errorf("VerifyLinkhop = %v, want %v", errL, tt.wantErr)
			}
			errS := VerifyStandard(tt.secret, tt.h, tt.body, tt.now)
			if !errors.Is(errS, tt.wantErr) || (tt.wantErr == nil) != (errS == nil) {
				t.Errorf("VerifyStandard = %v, want %v", errS, tt.wantErr)
			}
		})
	}
}

func TestVerifyStandardTamperedHeaders(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t)
	body := []byte(`{}`)
	ts := time.Unix(1_780_000_000, 0)
	h := http.Header{}
	if err := Sign(h, []string{secret}, "msg_a_1", ts, body); err != nil {
		t.Fatal(err)
	}
	// The id and timestamp are part of the signed message: changing either breaks it.
	changedID := h.Clone()
	changedID.Set(HeaderWebhookID, "msg_a_2")
	if err := VerifyStandard(secret, changedID, body, ts); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("changed id: %v", err)
	}
	changedTS := h.Clone()
	changedTS.Set(HeaderWebhookTimestamp, "1780000001")
	if err := VerifyStandard(secret, changedTS, body, ts); !errors.Is(err, ErrSignatureMismatch) {
		t.Errorf("changed timestamp: %v", err)
	}
	// The prefix is optional for the Standard Webhooks key.
	if err := VerifyStandard(strings.TrimPrefix(secret, SecretPrefix), h, body, ts); err != nil {
		t.Errorf("secret without prefix: %v", err)
	}
	if err := VerifyStandard("whsec_!!!", h, body, ts); !errors.Is(err, ErrInvalidSecret) {
		t.Errorf("bad secret: %v", err)
	}
}

func TestSignErrors(t *testing.T) {
	t.Parallel()
	good := mustSecret(t)
	tests := []struct {
		name    string
		secrets []string
		id      string
		wantErr error
	}{
		{"no secrets", nil, "msg_1", ErrNoSecrets},
		{"no prefix", []string{"abc"}, "msg_1", ErrInvalidSecret},
		{"not base64", []string{"whsec_not base64!"}, "msg_1", ErrInvalidSecret},
		{"second secret bad", []string{good, "whsec_"}, "msg_1", ErrInvalidSecret},
		{"empty id", []string{good}, "", ErrInvalidMessageID},
		{"id with newline", []string{good}, "msg\n1", ErrInvalidMessageID},
		{"id with space", []string{good}, "msg 1", ErrInvalidMessageID},
		{"id too long", []string{good}, strings.Repeat("m", 257), ErrInvalidMessageID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			err := Sign(h, tt.secrets, tt.id, time.Now(), []byte("{}"))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Sign = %v, want %v", err, tt.wantErr)
			}
			if len(h) != 0 {
				t.Errorf("headers set despite the error: %v", h)
			}
		})
	}
}

func TestParseLinkhopHeader(t *testing.T) {
	t.Parallel()
	sig := strings.Repeat("ab", 32)
	sig2 := strings.Repeat("0f", 32)
	tests := []struct {
		name     string
		in       string
		wantT    int64
		wantSigs int
		wantErr  bool
	}{
		{"one", "t=1780000000,v1=" + sig, 1780000000, 1, false},
		{"two", "t=1,v1=" + sig + ",v1=" + sig2, 1, 2, false},
		{"spaces", " t = 5 , v1 = " + sig + " ", 5, 1, false},
		{"unknown scheme ignored", "t=5,v0=zz,v1=" + sig, 5, 1, false},
		{"part without equals ignored", "t=5,junk,v1=" + sig, 5, 1, false},
		{"v1 before t", "v1=" + sig + ",t=7", 7, 1, false},
		{"uppercase hex", "t=5,v1=" + strings.ToUpper(sig), 5, 1, false},
		{"empty", "", 0, 0, true},
		{"no t", "v1=" + sig, 0, 0, true},
		{"no v1", "t=5", 0, 0, true},
		{"two t", "t=5,t=6,v1=" + sig, 0, 0, true},
		{"negative t", "t=-5,v1=" + sig, 0, 0, true},
		{"signed t", "t=+5,v1=" + sig, 0, 0, true},
		{"t not a number", "t=abc,v1=" + sig, 0, 0, true},
		{"t overflow", "t=99999999999999999999,v1=" + sig, 0, 0, true},
		{"short v1", "t=5,v1=abcd", 0, 0, true},
		{"v1 not hex", "t=5,v1=" + strings.Repeat("zz", 32), 0, 0, true},
		{"empty v1", "t=5,v1=", 0, 0, true},
		{"too many", "t=5" + strings.Repeat(",v1="+sig, 17), 0, 0, true},
		{"too long", "t=5,v1=" + sig + ",x=" + strings.Repeat("a", 5000), 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts, sigs, err := ParseLinkhopHeader(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedHeader) {
					t.Fatalf("err = %v, want ErrMalformedHeader", err)
				}
				return
			}
			if err != nil || ts != tt.wantT || len(sigs) != tt.wantSigs {
				t.Fatalf("got (%d, %d sigs, %v), want (%d, %d sigs)", ts, len(sigs), err, tt.wantT, tt.wantSigs)
			}
		})
	}
}

func TestParseStandardHeader(t *testing.T) {
	t.Parallel()
	sig := "v1,JCVFihYzwYa07MkNi73vJSAtYZNKu0ENcvDnqyGQK5Y="
	sig2 := "v1,aNvODtANBksYeD30gRB8z0zkBmx8hhzOoKeYZic2/Zg="
	tests := []struct {
		name     string
		in       string
		wantSigs int
		wantErr  bool
	}{
		{"one", sig, 1, false},
		{"two", sig + " " + sig2, 2, false},
		{"extra spaces", "  " + sig + "   " + sig2 + " ", 2, false},
		{"asymmetric scheme ignored", "v1a,AAAA " + sig, 1, false},
		{"entry without comma ignored", "garbage " + sig, 1, false},
		{"empty", "", 0, true},
		{"only other versions", "v1a,AAAA v2,BBBB", 0, true},
		{"not base64", "v1,@@@@", 0, true},
		{"wrong length", "v1,AAAA", 0, true},
		{"unpadded", "v1,JCVFihYzwYa07MkNi73vJSAtYZNKu0ENcvDnqyGQK5Y", 0, true},
		{"too many", strings.TrimSpace(strings.Repeat(sig+" ", 17)), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sigs, err := ParseStandardHeader(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedHeader) {
					t.Fatalf("err = %v, want ErrMalformedHeader", err)
				}
				return
			}
			if err != nil || len(sigs) != tt.wantSigs {
				t.Fatalf("got (%d sigs, %v), want %d sigs", len(sigs), err, tt.wantSigs)
			}
		})
	}
}

func TestMessageID(t *testing.T) {
	t.Parallel()
	a, b := MessageID("0b6f4a52-3c1e-4d2a-9a57-6f0d8e1c2b3a", 1), MessageID("0b6f4a52-3c1e-4d2a-9a57-6f0d8e1c2b3a", 2)
	if a == b || a != MessageID("0b6f4a52-3c1e-4d2a-9a57-6f0d8e1c2b3a", 1) {
		t.Fatalf("ids %q %q: must be stable per generation and differ between generations", a, b)
	}
	if err := validMessageID(a); err != nil {
		t.Fatal(err)
	}
}
