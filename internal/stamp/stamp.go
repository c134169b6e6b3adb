// Package stamp is the one timestamp format of linkhop's JSON (docs/api.md#conventions): RFC 3339 in UTC
// with exactly three fractional digits, e.g. "2026-11-23T14:39:32.512Z". Every body — API
// answers, webhook events, the key CLI and admin API — formats times through it.
package stamp

import "time"

// Layout is the format, for time.Time.Format.
const Layout = "2006-01-02T15:04:05.000Z"

// Format renders t in Layout (converted to UTC first).
func Format(t time.Time) string { return t.UTC().Format(Layout) }

// FormatPtr renders t, or returns nil for a nil or zero time (a JSON null).
func FormatPtr(t *time.Time) *string {
	if t == nil || t.IsZero() {
		return nil
	}
	s := Format(*t)
	return &s
}
