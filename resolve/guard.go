package resolve

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// GuardOptions configures the dial-time address guard shared by resolves and webhook deliveries.
type GuardOptions struct {
	// AllowPrivate is LINKHOP_ALLOW_PRIVATE_TARGETS: the block list and the port rule are lifted
	// (loopback, private and the rest are allowed on any port), except cloud metadata addresses,
	// which stay blocked because nothing legitimate lives there.
	AllowPrivate bool
	// Allow lists extra allowed prefixes (tests: 127.0.0.1/32), on any port.
	Allow []netip.Prefix
	// HostOverrides is LINKHOP_HOST_OVERRIDES: host -> "ip:port" to dial instead. The operator
	// vouches for these addresses, so they are exempt from the guard and the port rule.
	HostOverrides map[string]string
	// Resolver resolves names for guarded dials; nil means net.DefaultResolver. Tests set a stub
	// resolver to prove that DNS rebinding fails.
	Resolver *net.Resolver
}

// blockedPrefixes is the block list of docs/resolving.md#the-address-guard, which includes a
// few registry entries the special ranges imply (IPv4-compatible ::/96, site-local fec0::/10, NAT64 local-use, the newer
// IPv6 documentation prefix). IPv4-mapped and NAT64 prefixes are blocked whole: no public
// service is reached through them by a URL, and the guard never has to guess what they embed.
var blockedPrefixes = mustPrefixes(
	// IPv4
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	// IPv6
	"::/128", "::1/128", "::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
	"2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10",
	"ff00::/8",
)

// metadataAddrs are cloud metadata endpoints. They are inside blocked ranges anyway; they are
// listed so that they stay blocked even with AllowPrivate.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, DigitalOcean …
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IPv6
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// IsBlockedAddr reports whether a is on the guard's block list: loopback, private, link-local,
// CGNAT, multicast, reserved and documentation ranges, their IPv4-mapped and NAT64 forms, and
// cloud metadata addresses. The zone of a scoped address is ignored.
func IsBlockedAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = a.WithZone("")
	if a.Is4In6() && IsBlockedAddr(a.Unmap()) {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return isMetadataAddr(a)
}

func isMetadataAddr(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	for _, m := range metadataAddrs {
		if a == m {
			return true
		}
	}
	return false
}

// guard is the decision of one GuardOptions, used by the dialer's Control hook.
type guard struct {
	allowPrivate bool
	allow        []netip.Prefix
}

// check decides whether a dial to address (as Control sees it: "ip:port") may go ahead.
func (g guard) check(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse dialed address %q: %w", ErrBlockedAddress, address, err)
	}
	a := ap.Addr().WithZone("")
	if isMetadataAddr(a) {
		return fmt.Errorf("%w: %s is a cloud metadata address", ErrBlockedAddress, a)
	}
	if g.allowPrivate {
		return nil
	}
	for _, p := range g.allow {
		if p.Contains(a) || p.Contains(a.Unmap()) {
			return nil
		}
	}
	if IsBlockedAddr(a) {
		return fmt.Errorf("%w: %s", ErrBlockedAddress, a)
	}
	if port := ap.Port(); port != 80 && port != 443 {
		return fmt.Errorf("%w: %s port %d", ErrBlockedPort, a, port)
	}
	return nil
}

// control is the net.Dialer.Control hook: it runs for every address actually dialed (each
// Happy Eyeballs attempt too), after name resolution, which is what defeats DNS rebinding.
func (g guard) control(_, address string, _ syscall.RawConn) error {
	return g.check(address)
}

// NewDialContext returns the guarded dial function of NewTransport, for clients that build
// their own transport. Host overrides are dialed unguarded.
func NewDialContext(g GuardOptions) func(ctx context.Context, network, addr string) (net.Conn, error) {
	gd := guard{allowPrivate: g.AllowPrivate, allow: g.Allow}
	guarded := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		Control:   gd.control,
		Resolver:  g.Resolver,
	}
	plain := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	overrides := make(map[string]string, len(g.HostOverrides))
	for h, a := range g.HostOverrides {
		overrides[canonicalHost(h)] = a
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %q: %w", addr, err)
		}
		if ov, ok := overrides[canonicalHost(host)]; ok {
			return plain.DialContext(ctx, network, ov)
		}
		return guarded.DialContext(ctx, network, addr)
	}
}

// NewTransport returns a fresh transport whose every connection passes the guard: Proxy is nil
// (with a proxy the guard would only ever see the proxy's address), the dialer's Control hook
// checks each dialed IP and port, and LINKHOP_HOST_OVERRIDES hosts are dialed at their override
// address without the guard. TLS still verifies the certificate for the URL's host name.
func NewTransport(g GuardOptions) *http.Transport {
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            NewDialContext(g),
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

// ParseHostOverrides parses LINKHOP_HOST_OVERRIDES: "host=ip:port,...", returning host ->
// "ip:port" with lower-case hosts; config reads the variable with it. Spaces around entries
// are ignored, as are empty entries. The address must be a literal IP (docs/configuration.md
// says ip:port): the operator vouches for it, and a name would be resolved past the guard.
func ParseHostOverrides(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		host, addr, ok := strings.Cut(entry, "=")
		host, addr = canonicalHost(host), strings.TrimSpace(addr)
		if !ok || host == "" || strings.ContainsAny(host, "/:@ ") {
			return nil, fmt.Errorf("%w: %q is not host=ip:port", ErrBadHostOverride, entry)
		}
		h, port, err := net.SplitHostPort(addr)
		if err != nil || net.ParseIP(h) == nil {
			return nil, fmt.Errorf("%w: %q: address %q is not ip:port", ErrBadHostOverride, entry, addr)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: %q: port %q is not 1-65535", ErrBadHostOverride, entry, port)
		}
		if _, dup := out[host]; dup {
			return nil, fmt.Errorf("%w: host %q is given twice", ErrBadHostOverride, host)
		}
		out[host] = addr
	}
	return out, nil
}

// CheckWebhookHost is the validation-time check of a webhook_url host (docs/api.md#post-v1resolve): an IP
// literal (in any spelling a resolver accepts, like "127.1" or "2130706433") or a name in the
// blocked ranges, "localhost", or a name ending in .localhost/.internal/.local is an error. It
// does not resolve names: the dial-time guard is the real protection; this only gives an early,
// friendly 400.
func CheckWebhookHost(host string) error {
	h := canonicalHost(host)
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if h == "" {
		return fmt.Errorf("%w: empty host", ErrWebhookHost)
	}
	if a, ok := parseIPLiteral(h); ok {
		if IsBlockedAddr(a) {
			return fmt.Errorf("%w: %s is in a blocked address range", ErrWebhookHost, a)
		}
		return nil
	}
	if h == "localhost" {
		return fmt.Errorf("%w: localhost", ErrWebhookHost)
	}
	for _, suf := range []string{".localhost", ".internal", ".local"} {
		if strings.HasSuffix(h, suf) {
			return fmt.Errorf("%w: names ending in %s are internal", ErrWebhookHost, suf)
		}
	}
	return nil
}

// parseIPLiteral parses h as an IP address, including the legacy IPv4 spellings inet_aton
// accepts (1 to 4 parts, each decimal, 0x-hex or 0-octal), which resolvers and browsers honour.
func parseIPLiteral(h string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(h); err == nil {
		return a, true
	}
	parts := strings.Split(h, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" {
			return netip.Addr{}, false
		}
		v, err := strconv.ParseUint(p, 0, 32) // base 0: 0x hex, 0 octal, else decimal
		if err != nil || strings.Contains(p, "_") {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	last := len(vals) - 1
	for i := 0; i < last; i++ {
		if vals[i] > 255 {
			return netip.Addr{}, false
		}
		n = n<<8 | vals[i]
	}
	rest := uint(4 - last) // bytes left for the last part
	if vals[last] >= 1<<(8*rest) {
		return netip.Addr{}, false
	}
	n = n<<(8*rest) | vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true //nolint:gosec // n < 2^32: every part was range-checked above
}
