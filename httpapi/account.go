package httpapi

import (
	"net/http"
)

// accountView is the GET /v1/account body (CONTRACT §3). telegram_id and subscription_until
// exist only so Link Skipper clients parse it.
type accountView struct {
	KeyID              string          `json:"key_id"`
	Name               string          `json:"name"`
	Scopes             []string        `json:"scopes"`
	RateLimitPerMinute int             `json:"rate_limit_per_minute"`
	DailyQuota         *int64          `json:"daily_quota"`
	DailyUsed          int64           `json:"daily_used"`
	Balance            *int64          `json:"balance"`
	TelegramID         int64           `json:"telegram_id"`
	SubscriptionUntil  *string         `json:"subscription_until"`
	Providers          []providerBrief `json:"providers"`
}

type providerBrief struct {
	Provider string  `json:"provider"`
	Label    string  `json:"label"`
	Tier     *string `json:"tier"`
	Family   string  `json:"family"`
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	k := keyOf(r)
	used, err := s.Limiter.DayUsed(r.Context(), k.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	all := s.Registry.All()
	ps := make([]providerBrief, 0, len(all))
	for _, p := range all {
		ps = append(ps, providerBrief{Provider: p.ID, Label: p.Label, Tier: tierPtr(p.Tier), Family: p.Family})
	}
	writeJSON(w, http.StatusOK, accountView{
		KeyID: k.ID, Name: k.Name, Scopes: k.Scopes, RateLimitPerMinute: k.RateLimitPerMinute,
		DailyQuota: k.DailyQuota, DailyUsed: used, Balance: k.Credits, Providers: ps,
	})
}
