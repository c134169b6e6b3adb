// Package webhooks signs, verifies and delivers job events to clients' webhook URLs.
package webhooks

import "time"

// Delivery states of State.Status.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
)

// State is the job's "webhook" object (CONTRACT §3), kept current by deliveries.
type State struct {
	URL            string     `json:"url"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastAttemptAt  *time.Time `json:"last_attempt_at"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      *string    `json:"last_error"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
}
