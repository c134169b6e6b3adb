package keys

import "github.com/linkhop/linkhop/internal/stamp"

// View is a key as the CLI (`api keys …`) and the admin API print it (docs/configuration.md#keys). Token
// is set only in the answer to create, the only time the full key exists outside its owner;
// WebhookSecret only where the operator needs it (create, show, rotate).
type View struct {
	ID                 string   `json:"id"`
	Token              string   `json:"key,omitempty"`
	WebhookSecret      string   `json:"webhook_secret,omitempty"`
	Name               string   `json:"name"`
	Scopes             []string `json:"scopes"`
	RateLimitPerMinute int      `json:"rate_limit_per_minute"`
	DailyQuota         *int64   `json:"daily_quota"`
	Credits            *int64   `json:"credits"`
	CreatedAt          string   `json:"created_at,omitempty"`
	RevokedAt          string   `json:"revoked_at,omitempty"`
}

// ViewOf is k as printed, with its webhook secret when withSecret.
func ViewOf(k Key, withSecret bool) View {
	v := View{
		ID: k.ID, Name: k.Name, Scopes: k.Scopes, RateLimitPerMinute: k.RateLimitPerMinute,
		DailyQuota: k.DailyQuota, Credits: k.Credits, CreatedAt: stamp.Format(k.CreatedAt),
	}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if k.RevokedAt != nil {
		v.RevokedAt = stamp.Format(*k.RevokedAt)
	}
	if withSecret {
		v.WebhookSecret = k.webhookSecret
	}
	return v
}

// ViewOfCreated is the answer to create: the key with its token and secret, exactly the fields
// docs/configuration.md#keys lists.
func ViewOfCreated(c Created) View {
	v := ViewOf(c.Key, true)
	v.Token = c.Token
	v.CreatedAt = ""
	return v
}
