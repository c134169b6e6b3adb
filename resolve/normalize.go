package resolve

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// MaxURLLength is the longest submitted URL accepted (CONTRACT §3).
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
	if err := checkFetchable(u); err != nil {
		return nil, err
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: userinfo is not allowed", ErrUnsupportedURL)
	}
	return u, nil
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
	if u.Opaque != "" || u.Hostname() == "" {
		return fmt.Errorf("%w: no host", ErrUnsupportedURL)
	}
	return nil
}

// NormalizeURL returns the cache key form of a submitted URL (CONTRACT §6): lower-case scheme
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
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	n.Host = host
	n.Fragment, n.RawFragment = "", ""
	if n.Path == "" && n.RawPath == "" {
		n.Path = "/"
	}
	n.User = nil
	return n.String()
}
