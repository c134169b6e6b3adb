package quota

import (
	"context"
	"strings"
	"testing"
)

func TestCheckAuthFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := New(newRedis(t))
	for i := range 3 {
		d, err := l.CheckAuthFailure(ctx, "203.0.113.7:51234", 3)
		if err != nil || !d.Allowed {
			t.Fatalf("failure %d: %+v, %v; want allowed (answer 401)", i+1, d, err)
		}
	}
	d, err := l.CheckAuthFailure(ctx, "203.0.113.7", 3)
	if err != nil || d.Allowed || d.Code != CodeRateLimited || d.RetryAfter <= 0 {
		t.Fatalf("4th failure: %+v, %v; want rate_limited", d, err)
	}
	if d.RetryAfterSeconds() < 1 || d.Minute.Limit != 3 || d.policy != PolicyAuthFailures {
		t.Fatalf("4th failure: %+v", d)
	}
	// Another client is counted on its own.
	if d, err := l.CheckAuthFailure(ctx, "203.0.113.8", 3); err != nil || !d.Allowed {
		t.Fatalf("other client: %+v, %v", d, err)
	}
	// One IPv6 /64 is one client.
	for i, ip := range []string{"2001:db8:1:2::1", "[2001:db8:1:2::ffff]:443", "2001:db8:1:2:aaaa::1"} {
		if d, _ := l.CheckAuthFailure(ctx, ip, 3); !d.Allowed {
			t.Fatalf("IPv6 failure %d rejected", i+1)
		}
	}
	if d, _ := l.CheckAuthFailure(ctx, "2001:db8:1:2:ffff::9", 3); d.Allowed {
		t.Fatal("4th failure from one /64 allowed")
	}
	// Disabled limit.
	for range 10 {
		if d, err := l.CheckAuthFailure(ctx, "203.0.113.7", 0); err != nil || !d.Allowed {
			t.Fatalf("disabled limit: %+v, %v", d, err)
		}
	}
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{name: "ipv4", in: "192.0.2.1", want: "192.0.2.1"},
		{name: "ipv4 with port", in: "192.0.2.1:8080", want: "192.0.2.1"},
		{name: "ipv4 mapped", in: "::ffff:192.0.2.1", want: "192.0.2.1"},
		{name: "ipv4 mapped with port", in: "[::ffff:192.0.2.1]:80", want: "192.0.2.1"},
		{name: "ipv6", in: "2001:db8::1", want: "2001:db8::/64"},
		{name: "ipv6 bracketed", in: "[2001:db8::1]", want: "2001:db8::/64"},
		{name: "ipv6 with port", in: "[2001:db8:0:0:1::1]:443", want: "2001:db8::/64"},
		{name: "ipv6 zone", in: "fe80::1%eth0", want: "fe80::/64"},
		{name: "spaces", in: " 192.0.2.1 ", want: "192.0.2.1"},
		{name: "garbage", in: "not an ip", want: ClientKey("not an ip")},
	}
	for _, tt := range tests {
		if got := ClientKey(tt.in); got != tt.want {
			t.Errorf("%s: ClientKey(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
	if g := ClientKey("a}b{c"); strings.ContainsAny(g, "{}") || !strings.HasPrefix(g, "x") {
		t.Errorf("ClientKey of garbage = %q", g)
	}
	if ClientKey("a") == ClientKey("b") {
		t.Error("two garbage inputs share a key")
	}
}

// FuzzClientKey: any input gives a short key that cannot break the Redis hash tag, the same one
// every time.
func FuzzClientKey(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "192.0.2.1:80", "[::1]:80", "2001:db8::1", "fe80::1%eth0",
		"::ffff:10.0.0.1", "", "}", "{ip:x}", "[", "1.2.3.4.5", "[2001:db8::1", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := ClientKey(s)
		if k == "" || len(k) > 64 || strings.ContainsAny(k, "{} \t\r\n") {
			t.Fatalf("ClientKey(%q) = %q", s, k)
		}
		if ClientKey(s) != k {
			t.Fatalf("ClientKey(%q) not deterministic", s)
		}
	})
}
