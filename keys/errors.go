package keys

import "errors"

// ErrInvalidKey means a bearer token is malformed, unknown or revoked. Callers must not say
// which of the three it was.
var ErrInvalidKey = errors.New("keys: invalid key")

// ErrNotFound means no key has the given id.
var ErrNotFound = errors.New("keys: not found")

// ErrInvalidArgument wraps a bad value given to Create or Update.
var ErrInvalidArgument = errors.New("keys: invalid argument")
