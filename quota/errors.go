package quota

import "errors"

// ErrNoKeyID is returned by Check and DayUsed for an empty API key id: every limit is kept per
// key, and an empty id would silently share one budget between callers.
var ErrNoKeyID = errors.New("quota: empty key id")

// ErrInvalidLimits is returned by Check for negative per-minute limits. The key record never
// holds one; treating it as "unlimited" would hide a bug where it matters most.
var ErrInvalidLimits = errors.New("quota: invalid limits")

// ErrUnexpectedReply is returned when Redis answers a script with a shape this package does not
// know, which means the script and the code that reads it have drifted apart.
var ErrUnexpectedReply = errors.New("quota: unexpected reply from redis")

// ErrNoScript means Redis did not know a script that was sent by its SHA; load it with
// LoadScripts and run the batch again.
var ErrNoScript = errors.New("quota: script not loaded")
