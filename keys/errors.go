package keys

import "errors"

// ErrInvalidKey means a bearer token is malformed, unknown or revoked. Callers must not say
// which of the three it was.
var ErrInvalidKey = errors.New("keys: invalid key")

// ErrNotFound means no key has the given id.
var ErrNotFound = errors.New("keys: not found")

// ErrInvalidArgument is what every *ArgumentError is (errors.Is), for callers that only need
// to know that a value was refused.
var ErrInvalidArgument = errors.New("keys: invalid argument")

// ArgumentError is a bad value given to Create, Update or RotateWebhookSecret.
type ArgumentError struct {
	// Field is the refused field as View (and the admin API's bodies) name it: name, scopes,
	// rate_limit_per_minute, daily_quota, credits or grace.
	Field string
	// Reason says what is wrong, in words that start with the field ("credits must be >= 0").
	Reason string
}

func (e *ArgumentError) Error() string { return ErrInvalidArgument.Error() + ": " + e.Reason }

// Unwrap makes every ArgumentError an ErrInvalidArgument.
func (e *ArgumentError) Unwrap() error { return ErrInvalidArgument }
