package resolve

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"unicode/utf8"
)

// MaxURLLength is the longest submitted URL accepted (docs/api.md#post-v1resolve).
const MaxURLLength = 2048

// parseSubmitted parses a submitted URL: absolute http/https, a host, no userinfo, at most
// MaxURLLength characters.
func parseSubmitted(raw string) (*url.URL, error) {
	if len(raw) > MaxURLLength {
		return nil, fmt.Errorf("%w: longer than %d characters", ErrUnsupportedURL, MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedURL, err)
	}
	if err := checkParsed(raw, u); err != nil {
		return nil, err
	}
	return u, nil
}

// checkParsed is parseSubmitted's checks of u, url.Parse's URL of raw.
func checkParsed(raw string, u *url.URL) error {
	if len(raw) > MaxURLLength {
		return fmt.Errorf("%w: longer than %d characters", ErrUnsupportedURL, MaxURLLength)
	}
	if err := checkFetchable(u); err != nil {
		return err
	}
	if u.User != nil {
		return fmt.Errorf("%w: userinfo is not allowed", ErrUnsupportedURL)
	}
	return nil
}

// checkFetchable reports whether u is an absolute http(s) URL with a host.
func checkFetchable(u *url.URL) error {
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	case "":
		return fmt.Errorf("%w: not an absolute URL", ErrUnsupportedURL)
	default:
		return fmt.Errorf("%w: scheme %q is not http or https", ErrUnsupportedURL, u.Scheme)
	}
	h := u.Hostname()
	if u.Opaque != "" || h == "" {
		return fmt.Errorf("%w: no host", ErrUnsupportedURL)
	}
	// url.Parse decodes %-escapes in a host, so "%ff" makes one of bytes no name can have.
	if strings.ContainsAny(h, "[]") || !utf8.ValidString(h) {
		return fmt.Errorf("%w: malformed host", ErrUnsupportedURL)
	}
	if strings.Contains(h, ":") {
		if _, err := netip.ParseAddr(h); err != nil {
			return fmt.Errorf("%w: malformed IPv6 host", ErrUnsupportedURL)
		}
	}
	return nil
}

// NormalizeURL returns the cache key form of a submitted URL (docs/resolving.md#caching-and-sharing): lower-case scheme
// and host, default port and fragment dropped, an empty path written as "/". Path and query are
// kept byte for byte, because shorteners' codes are case-sensitive. It fails for what
// POST /v1/resolve would refuse as a URL (not absolute http(s), no host, userinfo, too long).
func NormalizeURL(raw string) (string, error) {
	u, err := parseSubmitted(raw)
	if err != nil {
		return "", err
	}
	return normalized(u), nil
}

// normalized is NormalizeURL for an already parsed URL; it does not modify u.
func normalized(u *url.URL) string {
	n := *u
	n.Scheme = strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (n.Scheme == "http" && port == "80") || (n.Scheme == "https" && port == "443") {
		port = ""
	}
	switch {
	case port != "":
		host = net.JoinHostPort(host, port) // brackets an IPv6 literal
	case strings.Contains(host, ":"):
		host = "[" + host + "]"
	}
	n.Host = host
	n.Fragment, n.RawFragment = "", ""
	if n.Path == "" && n.RawPath == "" {
		n.Path = "/"
	}
	n.User = nil
	return n.String()
}
