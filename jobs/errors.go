package jobs

import "errors"

// ErrNotFound means the job does not exist, expired, or belongs to another key.
var ErrNotFound = errors.New("jobs: not found")

// ErrExists means a job with that id already exists.
var ErrExists = errors.New("jobs: already exists")

// ErrNoChange, returned by an Update function, ends the update without writing.
var ErrNoChange = errors.New("jobs: no change")
