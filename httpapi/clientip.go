package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP is the address of the client a request came from (docs/operations.md#client-addresses).
// It is the TCP peer, unless the peer is one of the operator's TRUSTED_PROXIES: then the
// forwarding headers are read from the right, skipping trusted hops, and the first address
// not in the list is the client. Everything left of it was written by the client and is
// never believed, so a spoofed X-Forwarded-For changes nothing. Forwarded (RFC 7239) wins over
// X-Forwarded-For when both are present.
func (s *Server) clientIP(r *http.Request) string {
	peer := peerAddr(r)
	if len(s.TrustedProxies) == 0 || !trusted(s.TrustedProxies, peer) {
		return peer.String()
	}
	hops := forwardedFor(r.Header.Values("Forwarded"))
	if hops == nil {
		hops = xForwardedFor(r.Header.Values("X-Forwarded-For"))
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break // garbage in the chain: the last address we could trust stands
		}
		client = a
		if !trusted(s.TrustedProxies, a) {
			break
		}
	}
	return client.String()
}

func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	return a.Unmap()
}

func trusted(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// xForwardedFor lists the addresses of X-Forwarded-For headers, in order.
func xForwardedFor(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(part))
		}
	}
	return out
}

// forwardedFor lists the for= parameters of Forwarded headers (RFC 7239), in order; nil when
// there is none.
func forwardedFor(values []string) []string {
	var out []string
	for _, v := range values {
		for _, elem := range strings.Split(v, ",") {
			for _, pair := range strings.Split(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "for") {
					out = append(out, strings.Trim(strings.TrimSpace(val), `"`))
				}
			}
		}
	}
	return out
}

// parseHop reads one forwarded address: "203.0.113.7", "203.0.113.7:4711", "[2001:db8::1]",
// "[2001:db8::1]:4711" or "2001:db8::1". Obfuscated identifiers ("_hidden") and "unknown" are
// not addresses.
func parseHop(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
