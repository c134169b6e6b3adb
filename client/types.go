package client

import "time"

// Status is a job's status (docs/api.md): queued → running → done, failed or invalid.
type Status string

// The job statuses.
const (
	StatusQueued  Status = "queued"
	StatusRunning Status = "running"
	StatusDone    Status = "done"
	StatusFailed  Status = "failed"
	StatusInvalid Status = "invalid"
)

// Terminal reports whether a job in this status can no longer change.
func (s Status) Terminal() bool {
	return s == StatusDone || s == StatusFailed || s == StatusInvalid
}

// ResolveRequest is the body of POST /v1/resolve; only URL is required.
type ResolveRequest struct {
	URL string `json:"url"`
	// WebhookURL receives the signed event when the job ends (docs/webhooks.md).
	WebhookURL string `json:"webhook_url,omitempty"`
	// IdempotencyKey makes the request safe to send again (docs/api.md#idempotency).
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Resolution is the answer to POST /v1/resolve: a cached result (Status "done") or a
// queued job (Status "queued", with JobID, QueuePosition and PollURL).
type Resolution struct {
	JobID         string `json:"job_id"`
	Status        Status `json:"status"`
	QueuePosition int64  `json:"queue_position,omitempty"`
	PollURL       string `json:"poll_url,omitempty"`
	// URL, TargetURL, Provider, Tier, CreditsCharged, Cached and Balance are set on a "done"
	// answer.
	URL            string `json:"url,omitempty"`
	TargetURL      string `json:"target_url,omitempty"`
	Provider       string `json:"provider,omitempty"`
	Tier           string `json:"tier,omitempty"`
	CreditsCharged int64  `json:"credits_charged,omitempty"`
	Cached         bool   `json:"cached,omitempty"`
	// Balance is nil for a key without a credit balance (unlimited).
	Balance *int64 `json:"balance,omitempty"`
}

// Job is a job as GET /v1/jobs/{job_id} shows it (docs/api.md).
type Job struct {
	JobID  string `json:"job_id"`
	Status Status `json:"status"`
	URL    string `json:"url"`
	// TargetURL is the destination, when Status is "done".
	TargetURL string `json:"target_url"`
	Provider  string `json:"provider"`
	// Tier is "standard", "premium" or empty.
	Tier string `json:"tier"`
	// Error is the job's error code when it failed: resolve_failed, provider_down,
	// link_removed, unsupported_link (docs/errors.md#job-errors).
	Error          string     `json:"error"`
	ErrorDetail    string     `json:"error_detail"`
	CreditsCharged int64      `json:"credits_charged"`
	Balance        *int64     `json:"balance"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	CompletedAt    *time.Time `json:"completed_at"`
	Hops           []Hop      `json:"hops"`
	Webhook        *Webhook   `json:"webhook"`
	// Cached is true when [Client.ResolveAndWait] or [Client.ResolveMany] got a cached answer:
	// there is no job then (JobID is empty), and no hops. The API's job bodies do not carry it.
	Cached bool `json:"-"`
}

// Hop is one URL on the way from a job's url to its target_url.
type Hop struct {
	URL string `json:"url"`
	// Status is the HTTP status received for URL, nil when it was not fetched.
	Status *int `json:"status"`
	// Kind is how this URL was reached: start, http, refresh, meta, js, param, provider, form.
	Kind string `json:"kind"`
}

// Webhook is the delivery state of a job's webhook (docs/webhooks.md).
type Webhook struct {
	URL            string     `json:"url"`
	Status         string     `json:"status"` // pending, delivered, failed
	Attempts       int        `json:"attempts"`
	LastAttemptAt  *time.Time `json:"last_attempt_at"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      *string    `json:"last_error"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
}

// Account is GET /v1/account: the calling key's settings, usage and balance.
type Account struct {
	KeyID              string   `json:"key_id"`
	Name               string   `json:"name"`
	Scopes             []string `json:"scopes"`
	RateLimitPerMinute int      `json:"rate_limit_per_minute"`
	// DailyQuota is nil when the key has no daily quota.
	DailyQuota *int64 `json:"daily_quota"`
	DailyUsed  int64  `json:"daily_used"`
	// Balance is nil for a key without a credit balance (unlimited).
	Balance           *int64            `json:"balance"`
	TelegramID        int64             `json:"telegram_id"`
	SubscriptionUntil *string           `json:"subscription_until"`
	Providers         []AccountProvider `json:"providers"`
}

// AccountProvider is a provider as GET /v1/account lists it.
type AccountProvider struct {
	Provider string `json:"provider"`
	Label    string `json:"label"`
	Tier     string `json:"tier"`
}

// Provider is a provider as GET /v1/providers lists it.
type Provider struct {
	Provider string   `json:"provider"`
	Label    string   `json:"label"`
	Hosts    []string `json:"hosts"`
	Tier     string   `json:"tier"`
	// Latency is a human string: "~350ms", "~5s", "unknown".
	Latency string `json:"latency"`
	// Family is how the provider's pages are walked, on servers that report it.
	Family string `json:"family,omitempty"`
}
