package quota

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
)

// DefaultAuthFailuresPerMinute is the failed-authentication budget per client and rolling
// window that docs/limits.md#failed-authentications names (AUTH_FAILURES_PER_MINUTE).
const DefaultAuthFailuresPerMinute = 30

// CheckAuthFailure records one failed authentication from client address ip in the rolling
// window and reports whether it is still within perMinute failures. Call it only after
// authentication failed: Allowed means answer 401, !Allowed means answer 429 rate_limited
// (and the failure is not recorded, so a client hammering on past the limit stays at exactly
// perMinute guesses per window). perMinute <= 0 disables the limit.
//
// Clients are grouped by ClientKey: an IPv4 address each, an IPv6 /64 each, because one host
// commonly owns a whole /64 and could otherwise rotate through it.
func (l *Limiter) CheckAuthFailure(ctx context.Context, ip string, perMinute int) (Decision, error) {
	if perMinute <= 0 {
		return Decision{Allowed: true, policy: PolicyAuthFailures, day: -1}, nil
	}
	lk := "linkhop:{ip:" + ClientKey(ip) + "}:authfail"
	d, err := l.check(ctx, lk, "", Limits{PerMinute: perMinute, DailyQuota: -1}, false)
	if err != nil {
		return Decision{}, err // already says "quota: check: …"
	}
	d.policy = PolicyAuthFailures
	return d, nil
}

// ClientKey maps a client address as the HTTP layer sees it (an IP, with or without port or
// zone, or anything else) to the identity the failed-authentication limit counts: the IPv4
// address, the IPv6 /64 prefix (an IPv4-mapped IPv6 address counts as its IPv4 address), or
// for text that is no address, "x" and a hash of it, so any input gives a short key without
// braces that could break the Redis hash tag.
func ClientKey(ip string) string {
	s := strings.TrimSpace(ip)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return addrKey(ap.Addr())
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(s); err == nil {
		return addrKey(a)
	}
	sum := sha256.Sum256([]byte(ip))
	return "x" + hex.EncodeToString(sum[:12])
}

func addrKey(a netip.Addr) string {
	a = a.WithZone("").Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64) // cannot fail for an IPv6 address without zone
	return p.String()
}
