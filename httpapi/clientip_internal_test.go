package httpapi

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	cases := []struct {
		name    string
		proxies []netip.Prefix
		peer    string
		xff     []string
		fwd     []string
		want    string
	}{
		{"no proxies: the peer, whatever the headers say", nil, "203.0.113.9:5000", []string{"198.51.100.1"}, []string{"for=198.51.100.2"}, "203.0.113.9"},
		{"untrusted peer spoofing", trusted, "203.0.113.9:5000", []string{"198.51.100.1"}, nil, "203.0.113.9"},
		{"trusted peer, one hop", trusted, "10.1.2.3:80", []string{"198.51.100.1"}, nil, "198.51.100.1"},
		{"client-written left part ignored", trusted, "10.1.2.3:80", []string{"6.6.6.6, 198.51.100.1"}, nil, "198.51.100.1"},
		{"chain of trusted proxies", trusted, "10.1.2.3:80", []string{"198.51.100.1, 10.9.9.9", "10.8.8.8"}, nil, "198.51.100.1"},
		{"all trusted: the leftmost", trusted, "10.1.2.3:80", []string{"10.7.7.7, 10.9.9.9"}, nil, "10.7.7.7"},
		{"garbage stops the walk", trusted, "10.1.2.3:80", []string{"198.51.100.1, not-an-ip"}, nil, "10.1.2.3"},
		{"no header: the proxy itself", trusted, "10.1.2.3:80", nil, nil, "10.1.2.3"},
		{"Forwarded wins", trusted, "10.1.2.3:80", []string{"198.51.100.1"}, []string{`for=192.0.2.60;proto=https, for="[2001:db8::7]:4711"`}, "2001:db8::7"},
		{"Forwarded with an obfuscated hop", trusted, "10.1.2.3:80", nil, []string{"for=198.51.100.3, for=_hidden"}, "10.1.2.3"},
		{"IPv6 proxy", trusted, "[fd00::1]:443", []string{"198.51.100.4:1234"}, nil, "198.51.100.4"},
		{"IPv4-mapped peer", trusted, "[::ffff:10.1.2.3]:80", []string{"198.51.100.5"}, nil, "198.51.100.5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &Server{Deps: Deps{TrustedProxies: tc.proxies}}
			r := httptest.NewRequest("GET", "/v1/account", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			for _, v := range tc.fwd {
				r.Header.Add("Forwarded", v)
			}
			if got := s.clientIP(r); got != tc.want {
				t.Errorf("clientIP = %s, want %s", got, tc.want)
			}
		})
	}
}
