// Package jsonstr appends JSON strings exactly as encoding/json writes them, for the
// hand-written encoders of the hot paths (a poll's view, a batch's new job records), which must
// stay byte for byte what encoding/json gave.
package jsonstr

import (
	"encoding/json"
	"unicode/utf8"
)

// Append appends s as a JSON string exactly as encoding/json writes it: a string of plain
// printable ASCII as it is, anything else (quotes, backslashes, control characters, <, > and &,
// which encoding/json escapes for HTML, non-ASCII) through encoding/json itself.
func Append(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
