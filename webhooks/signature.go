package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/linkhop/linkhop/internal/buildinfo"
)

// Header names written by [Sign]. Go canonicalises them on the wire (Webhook-Id, …); HTTP
// header names are case-insensitive, so receivers see the same header either way.
const (
	// HeaderLinkhopSignature carries the Link Skipper scheme: t=<unix>,v1=<hex>[,v1=<hex>].
	HeaderLinkhopSignature = "Linkhop-Signature"
	// HeaderLinkSkipperSignature carries the same value as [HeaderLinkhopSignature], under the
	// name that receivers written for Link Skipper read.
	HeaderLinkSkipperSignature = "X-LinkSkipper-Signature"
	// HeaderWebhookID is the Standard Webhooks message id, stable across retries.
	HeaderWebhookID = "webhook-id"
	// HeaderWebhookTimestamp is the Standard Webhooks signing time in unix seconds.
	HeaderWebhookTimestamp = "webhook-timestamp"
	// HeaderWebhookSignature carries Standard Webhooks signatures: v1,<base64>[ v1,<base64>].
	HeaderWebhookSignature = "webhook-signature"
)

// UserAgent is the User-Agent of every delivery: linkhop-webhooks/<the build's version>
// (docs/webhooks.md).
var UserAgent = "linkhop-webhooks/" + buildinfo.Version

// SecretPrefix starts every webhook secret.
const SecretPrefix = "whsec_"

// Tolerance is how far a signed timestamp may be from the receiver's clock, either way. Five
// minutes is what Stripe, Svix and Standard Webhooks use: wide enough for clock skew and slow
// networks, narrow enough that a captured request cannot be replayed much later.
const Tolerance = 5 * time.Minute

// Limits of the header parsers: far above anything linkhop sends (at most two signatures),
// low enough that a hostile header cannot make a receiver do much work.
const (
	maxHeaderLen  = 4096
	maxSignatures = 16
	maxIDLen      = 256
)

// MessageID is the webhook-id of a job's delivery. generation counts the deliveries of the
// job (1 for the first, +1 per redelivery): retries of one delivery share the id, so
// receivers can drop duplicates, while a redelivery the user asked for is a new message.
func MessageID(jobID string, generation int) string {
	return "msg_" + jobID + "_" + strconv.Itoa(generation)
}

// standardKey is the Standard Webhooks HMAC key: the base64-decoded part after "whsec_".
// The prefix is optional here, as in the Standard Webhooks libraries.
func standardKey(secret string) ([]byte, error) {
	raw := strings.TrimPrefix(secret, SecretPrefix)
	if raw == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidSecret)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		// Some tools strip the padding; accept that too rather than fail a delivery.
		if k2, err2 := base64.RawStdEncoding.DecodeString(raw); err2 == nil {
			return k2, nil
		}
		return nil, fmt.Errorf("%w: not base64 after %q: %w", ErrInvalidSecret, SecretPrefix, err)
	}
	return key, nil
}

func validMessageID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%w: length %d", ErrInvalidMessageID, len(id))
	}
	for i := 0; i < len(id); i++ {
		// Printable ASCII without space: it goes into a header and into the signed message,
		// where a '.'-free, space-free id keeps "id.timestamp.body" unambiguous to read.
		if c := id[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: byte %#x at %d", ErrInvalidMessageID, c, i)
		}
	}
	return nil
}

func linkhopMAC(secret string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func standardMAC(key []byte, id string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Sign sets Content-Type, User-Agent, Linkhop-Signature, X-LinkSkipper-Signature, webhook-id,
// webhook-timestamp and webhook-signature on h.
//
// secrets are newest first; during a rotation grace there are two, and each header lists one
// v1 entry per secret in that order: the new secret's first and the previous secret's last.
// The Link Skipper SDK verifier reads only the last v1 entry, so its users keep the old secret
// until the grace ends; Standard Webhooks verifiers try every entry.
//
// The Link Skipper scheme keys HMAC-SHA256 with the whole "whsec_…" string over
// "<unix>.<body>", hex; Standard Webhooks keys it with the base64-decoded bytes after
// "whsec_" over "<msgID>.<unix>.<body>", base64. Nothing is set when an error is returned.
func Sign(h http.Header, secrets []string, msgID string, ts time.Time, body []byte) error {
	if len(secrets) == 0 {
		return ErrNoSecrets
	}
	if err := validMessageID(msgID); err != nil {
		return err
	}
	unix := ts.Unix()
	tsText := strconv.FormatInt(unix, 10)
	var lh, sw strings.Builder
	lh.WriteString("t=" + tsText)
	for i, secret := range secrets {
		if !strings.HasPrefix(secret, SecretPrefix) {
			return fmt.Errorf("%w: secret %d lacks the %q prefix", ErrInvalidSecret, i, SecretPrefix)
		}
		key, err := standardKey(secret)
		if err != nil {
			return fmt.Errorf("secret %d: %w", i, err)
		}
		lh.WriteString(",v1=")
		lh.WriteString(hex.EncodeToString(linkhopMAC(secret, unix, body)))
		if i > 0 {
			sw.WriteByte(' ')
		}
		sw.WriteString("v1,")
		sw.WriteString(base64.StdEncoding.EncodeToString(standardMAC(key, msgID, unix, body)))
	}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", UserAgent)
	h.Set(HeaderLinkhopSignature, lh.String())
	h.Set(HeaderLinkSkipperSignature, lh.String())
	h.Set(HeaderWebhookID, msgID)
	h.Set(HeaderWebhookTimestamp, tsText)
	h.Set(HeaderWebhookSignature, sw.String())
	return nil
}

// ParseLinkhopHeader parses a Link Skipper scheme header, "t=<unix>,v1=<hex>[,v1=<hex>…]".
//
// Parts are comma-separated key=value pairs with optional spaces around them. Keys other than
// t and v1 (a future scheme), and parts without '=', are ignored, as the Link Skipper SDK
// does. There must be exactly one t of decimal digits, and at least one v1; every v1 must be
// the hex of a 32-byte HMAC-SHA256. sigs are in header order.
func ParseLinkhopHeader(s string) (t int64, sigs [][]byte, err error) {
	if len(s) > maxHeaderLen {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrMalformedHeader, len(s))
	}
	seenT := false
	for part := range strings.SplitSeq(s, ",") {
		key, value, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "t":
			if seenT {
				return 0, nil, fmt.Errorf("%w: more than one t", ErrMalformedHeader)
			}
			seenT = true
			if t, err = parseUnix(value); err != nil {
				return 0, nil, err
			}
		case "v1":
			if len(sigs) == maxSignatures {
				return 0, nil, fmt.Errorf("%w: more than %d signatures", ErrMalformedHeader, maxSignatures)
			}
			sig, err := hex.DecodeString(value)
			if err != nil || len(sig) != sha256.Size {
				return 0, nil, fmt.Errorf("%w: v1 is not the hex of a SHA-256 HMAC", ErrMalformedHeader)
			}
			sigs = append(sigs, sig)
		}
	}
	if !seenT {
		return 0, nil, fmt.Errorf("%w: no t", ErrMalformedHeader)
	}
	if len(sigs) == 0 {
		return 0, nil, fmt.Errorf("%w: no v1", ErrMalformedHeader)
	}
	return t, sigs, nil
}

// ParseStandardHeader parses a Standard Webhooks webhook-signature header: space-separated
// "<version>,<base64>" entries. Entries of other versions (v1a, …) and entries without a
// comma are ignored; every v1 must be the standard base64 of a 32-byte HMAC-SHA256, and there
// must be at least one. sigs are in header order.
func ParseStandardHeader(s string) (sigs [][]byte, err error) {
	if len(s) > maxHeaderLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformedHeader, len(s))
	}
	for entry := range strings.FieldsSeq(s) {
		version, value, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		if len(sigs) == maxSignatures {
			return nil, fmt.Errorf("%w: more than %d signatures", ErrMalformedHeader, maxSignatures)
		}
		sig, err := base64.StdEncoding.DecodeString(value)
		if err != nil || len(sig) != sha256.Size {
			return nil, fmt.Errorf("%w: v1 is not the base64 of a SHA-256 HMAC", ErrMalformedHeader)
		}
		sigs = append(sigs, sig)
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: no v1 signature", ErrMalformedHeader)
	}
	return sigs, nil
}

// parseUnix reads unix seconds: decimal digits only (no sign, no spaces), as both schemes
// write them.
func parseUnix(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, fmt.Errorf("%w: timestamp %q", ErrMalformedHeader, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%w: timestamp %q", ErrMalformedHeader, s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: timestamp %q: %w", ErrMalformedHeader, s, err)
	}
	return n, nil
}

func checkTolerance(ts int64, now time.Time) error {
	d := now.Unix() - ts
	if d < 0 {
		d = -d
	}
	if d > int64(Tolerance/time.Second) {
		return fmt.Errorf("%w: signed at %d, now %d", ErrTimestampOutOfTolerance, ts, now.Unix())
	}
	return nil
}

// anyEqual compares want against every candidate in constant time per candidate, and does
// not stop at the first match, so timing says nothing about which entry matched.
func anyEqual(want []byte, sigs [][]byte) bool {
	found := 0
	for _, sig := range sigs {
		if hmac.Equal(want, sig) {
			found = 1
		}
	}
	return found == 1
}

// VerifyLinkhop, VerifyStandard and the Parse…Header functions are not called by linkhop's
// binaries, which only sign: they are the public API for webhook receivers written in Go
// (docs/webhooks.md#go), and the tests prove signing and verifying agree.

// VerifyLinkhop checks a Linkhop-Signature (or X-LinkSkipper-Signature) header against the raw
// request body: some v1 entry must be the hex HMAC-SHA256, keyed with the whole "whsec_…"
// secret, of "<t>.<body>", and t must be within [Tolerance] of now. Pass the body exactly as
// received, before any JSON decoding.
func VerifyLinkhop(secret, header string, body []byte, now time.Time) error {
	if secret == "" {
		return fmt.Errorf("%w: empty", ErrInvalidSecret)
	}
	ts, sigs, err := ParseLinkhopHeader(header)
	if err != nil {
		return err
	}
	if !anyEqual(linkhopMAC(secret, ts, body), sigs) {
		return ErrSignatureMismatch
	}
	return checkTolerance(ts, now)
}

// VerifyStandard checks the Standard Webhooks headers (webhook-id, webhook-timestamp,
// webhook-signature) against the raw request body: some v1 entry must be the base64
// HMAC-SHA256, keyed with the base64-decoded secret after "whsec_" (the prefix is optional),
// of "<id>.<timestamp>.<body>", and the timestamp must be within [Tolerance] of now.
func VerifyStandard(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := standardKey(secret)
	if err != nil {
		return err
	}
	id, tsText, sigText := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	if id == "" || tsText == "" || sigText == "" {
		return fmt.Errorf("%w: webhook-id, webhook-timestamp and webhook-signature are required", ErrMalformedHeader)
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("%w: webhook-id of %d bytes", ErrMalformedHeader, len(id))
	}
	ts, err := parseUnix(tsText)
	if err != nil {
		return err
	}
	sigs, err := ParseStandardHeader(sigText)
	if err != nil {
		return err
	}
	if !anyEqual(standardMAC(key, id, ts, body), sigs) {
		return ErrSignatureMismatch
	}
	return checkTolerance(ts, now)
}
