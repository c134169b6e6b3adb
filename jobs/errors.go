package jobs

import "errors"

// ErrNotFound means the job does not exist, expired, or belongs to another key.
var ErrNotFound = errors.New("jobs: not found")

// ErrExists means a job with that id already exists.
var ErrExists = errors.New("jobs: already exists")

// ErrNoChange ends an update without writing when an Update function returns it.
var ErrNoChange = errors.New("jobs: no change")

// ErrNoWebhook means the job was submitted without a webhook_url.
var ErrNoWebhook = errors.New("jobs: job has no webhook")

// ErrWebhookPending means a webhook delivery of the job is still pending (or the job has not
// finished yet, and its delivery is still to come), so a redelivery is refused.
var ErrWebhookPending = errors.New("jobs: webhook delivery pending")
