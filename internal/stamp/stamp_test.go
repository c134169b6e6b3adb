package stamp

import (
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 15, 4, 5, 100_000_000, time.FixedZone("x", 3600))
	if got := Format(at); got != "2026-11-23T14:04:05.100Z" {
		t.Errorf("Format = %q", got)
	}
	if FormatPtr(nil) != nil || FormatPtr(&time.Time{}) != nil {
		t.Error("nil or zero time must be null")
	}
	if got := FormatPtr(&at); got == nil || *got != "2026-11-23T14:04:05.100Z" {
		t.Errorf("FormatPtr = %v", got)
	}
}
