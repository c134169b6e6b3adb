package webhooks

import (
	"crypto/sha256"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseLinkhopHeader: the header comes from whoever calls a receiver. The parser must
// never panic, must only return what it promises (a t and 1–16 SHA-256-sized signatures),
// and whatever it accepts must survive being written back and parsed again.
func FuzzParseLinkhopHeader(f *testing.F) {
	sig := strings.Repeat("ab", 32)
	for _, s := range []string{
		"t=1780660800,v1=db8db18dfb856e31789c7bc4d09410aeab35c72a987a746e3ad28ed9cdd2dec0",
		"t=1,v1=" + sig + ",v1=" + sig,
		" t = 5 , v1 = " + sig,
		"t=5,v0=zz,junk,v1=" + sig,
		"", "t=", "v1=", ",,,", "t=1,t=2", "t=-1,v1=" + sig, "t=99999999999999999999,v1=" + sig,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, sigs, err := ParseLinkhopHeader(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("error %v does not wrap ErrMalformedHeader", err)
			}
			return
		}
		if ts < 0 || len(sigs) == 0 || len(sigs) > maxSignatures {
			t.Fatalf("accepted t=%d with %d signatures", ts, len(sigs))
		}
		var b strings.Builder
		b.WriteString("t=" + strconv.FormatInt(ts, 10))
		for _, sig := range sigs {
			if len(sig) != sha256.Size {
				t.Fatalf("signature of %d bytes", len(sig))
			}
			b.WriteString(",v1=")
			for _, c := range sig {
				b.WriteString(strconv.FormatUint(uint64(c)>>4, 16) + strconv.FormatUint(uint64(c)&15, 16))
			}
		}
		ts2, sigs2, err := ParseLinkhopHeader(b.String())
		if err != nil || ts2 != ts || len(sigs2) != len(sigs) {
			t.Fatalf("round trip of %q: %d, %d sigs, %v", b.String(), ts2, len(sigs2), err)
		}
		// Verifying an arbitrary accepted header must not panic either.
		_ = VerifyLinkhop("whsec_AAAA", s, []byte("{}"), time.Unix(ts, 0))
	})
}

// FuzzParseStandardHeader: as above, for the webhook-signature header.
func FuzzParseStandardHeader(f *testing.F) {
	for _, s := range []string{
		"v1,JCVFihYzwYa07MkNi73vJSAtYZNKu0ENcvDnqyGQK5Y=",
		"v1,I6i3kfseNcDl5S/KOD6D5L1BrkQeHixzQmvLqw3VvkY= v1,iRGtjpIVpK3NwI+OT7leGjidaWPjbFRFbKpo5gL8L1c=",
		"v1a,AAAA v1,JCVFihYzwYa07MkNi73vJSAtYZNKu0ENcvDnqyGQK5Y=",
		"", "v1,", "v1", ",", "v1,@@@", "\tv1,JCVFihYzwYa07MkNi73vJSAtYZNKu0ENcvDnqyGQK5Y=\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sigs, err := ParseStandardHeader(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHeader) {
				t.Fatalf("error %v does not wrap ErrMalformedHeader", err)
			}
			return
		}
		if len(sigs) == 0 || len(sigs) > maxSignatures {
			t.Fatalf("accepted %d signatures", len(sigs))
		}
		for _, sig := range sigs {
			if len(sig) != sha256.Size {
				t.Fatalf("signature of %d bytes", len(sig))
			}
		}
	})
}

// FuzzParseRetryAfter: a receiver's Retry-After is untrusted; whatever it says, the delay
// must stay within [0, MaxRetryAfter].
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "1", "120", "601", "99999999999999999999", "-1", "1.5", " 7 ",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "", "soon"} {
		f.Add(s)
	}
	now := time.Date(2026, 6, 5, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if d < 0 || d > MaxRetryAfter || (!ok && d != 0) {
			t.Fatalf("ParseRetryAfter(%q) = %s, %v", s, d, ok)
		}
	})
}
