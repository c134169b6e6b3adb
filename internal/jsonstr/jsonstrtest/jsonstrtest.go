// Package jsonstrtest generates strings for tests that hold a JSON encoder written by hand
// (internal/jsonstr and its users) to encoding/json's output.
package jsonstrtest

import (
	"math/rand/v2"
	"strings"
)

// Nasty are strings that take every branch of encoding/json's string escaping.
var Nasty = []string{
	"", "plain", "https://sho.rt/a?b=c&d=<e>", `quote " and \ backslash`, "tab\tnl\ncr\r\b\f\x00\x1f",
	"ünïcödé ✓ 😀", "line\u2028sep\u2029", "bad utf-8 \xff\xfe", "\x7f", "/slashes/", "<script>",
}

// String returns one of Nasty a third of the time, else up to 30 random characters: mostly
// URL-ish ASCII, with control characters, runes beyond ASCII and bytes that may not be valid
// UTF-8 among them.
func String(rng *rand.Rand) string {
	if rng.IntN(3) == 0 {
		return Nasty[rng.IntN(len(Nasty))]
	}
	var b strings.Builder
	for range rng.IntN(30) {
		switch rng.IntN(10) {
		case 0:
			b.WriteRune(rng.Int32N(0x80))
		case 1:
			b.WriteRune(rng.Int32N(0x3000))
		case 2:
			b.WriteByte(byte(rng.Uint32() >> 24)) //nolint:gosec // the top 8 bits: possibly invalid UTF-8
		case 3:
			b.WriteRune(0x20 + rng.Int32N(0x5f)) // any printable ASCII
		default:
			b.WriteByte("abcxyz019-_./:?=%"[rng.IntN(17)])
		}
	}
	return b.String()
}
