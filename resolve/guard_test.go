package resolve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/dns/dnsmessage"
)

func TestIsBlockedAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr    string
		blocked bool
	}{
		{"0.0.0.0", true}, {"0.1.2.3", true}, {"10.1.2.3", true}, {"100.64.0.1", true},
		{"100.127.255.254", true}, {"127.0.0.1", true}, {"127.0.0.2", true}, {"169.254.169.254", true},
		{"172.16.0.1", true}, {"172.31.255.255", true}, {"192.0.0.8", true}, {"192.0.2.1", true},
		{"192.88.99.1", true}, {"192.168.1.1", true}, {"198.18.0.1", true}, {"198.19.255.1", true},
		{"198.51.100.7", true}, {"203.0.113.9", true}, {"224.0.0.1", true}, {"239.255.255.250", true},
		{"240.0.0.1", true}, {"255.255.255.255", true},
		{"::", true}, {"::1", true}, {"::ffff:127.0.0.1", true}, {"::ffff:10.0.0.1", true},
		{"::ffff:8.8.8.8", true}, {"::127.0.0.1", true}, {"64:ff9b::7f00:1", true}, {"64:ff9b::a9fe:a9fe", true},
		{"64:ff9b:1::1", true}, {"100::1", true}, {"2001::1", true}, {"2001:db8::1", true},
		{"2002:7f00:1::", true}, {"fc00::1", true}, {"fd00:ec2::254", true}, {"fe80::1", true},
		{"fe80::1%eth0", true}, {"fec0::1", true}, {"ff02::1", true}, {"3fff::1", true},
		// public
		{"8.8.8.8", false}, {"1.1.1.1", false}, {"100.63.255.255", false}, {"100.128.0.0", false},
		{"172.15.255.255", false}, {"172.32.0.0", false}, {"192.0.1.1", false}, {"198.17.255.255", false},
		{"93.184.216.34", false}, {"2606:4700:4700::1111", false}, {"2a00:1450:4001:80b::200e", false},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			if got := IsBlockedAddr(netip.MustParseAddr(tc.addr)); got != tc.blocked {
				t.Errorf("IsBlockedAddr(%s) = %v, want %v", tc.addr, got, tc.blocked)
			}
		})
	}
	if !IsBlockedAddr(netip.Addr{}) {
		t.Error("the zero Addr must be blocked")
	}
}

func TestGuardCheck(t *testing.T) {
	t.Parallel()
	lo := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		name    string
		g       guard
		address string
		want    error
	}{
		{"public 443", guard{}, "93.184.216.34:443", nil},
		{"public 80", guard{}, "[2606:4700::1]:80", nil},
		{"public 8080", guard{}, "93.184.216.34:8080", ErrBlockedPort},
		{"loopback", guard{}, "127.0.0.1:80", ErrBlockedAddress},
		{"mapped loopback", guard{}, "[::ffff:127.0.0.1]:80", ErrBlockedAddress},
		{"nat64 private", guard{}, "[64:ff9b::a00:1]:443", ErrBlockedAddress},
		{"metadata", guard{}, "169.254.169.254:80", ErrBlockedAddress},
		{"garbage", guard{}, "not-an-ip:80", ErrBlockedAddress},
		{"allowed prefix any port", guard{allow: lo}, "127.0.0.1:54321", nil},
		{"allowed prefix, mapped form", guard{allow: lo}, "[::ffff:127.0.0.1]:54321", nil},
		{"outside allowed prefix", guard{allow: lo}, "127.0.0.2:54321", ErrBlockedAddress},
		{"allow private: loopback any port", guard{allowPrivate: true}, "127.0.0.2:6000", nil},
		{"allow private: private", guard{allowPrivate: true}, "10.0.0.1:8080", nil},
		{"allow private: metadata stays blocked", guard{allowPrivate: true}, "169.254.169.254:80", ErrBlockedAddress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.g.check(tc.address)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("check(%s) = %v, want %v", tc.address, err, tc.want)
			}
		})
	}
}

func TestNewTransport(t *testing.T) {
	t.Parallel()
	tr := NewTransport(GuardOptions{})
	if tr.Proxy != nil {
		t.Error("Proxy must be nil: the guard would only see the proxy")
	}
	// Odd spellings of loopback are refused at dial time, whatever the URL says.
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, u := range []string{"http://127.1/", "http://2130706433/", "http://[::ffff:127.0.0.1]/", "http://0x7f.0.0.1/", "http://localhost/"} {
		resp, err := c.Get(u)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: request went through", u)
			continue
		}
		if !errors.Is(err, ErrBlockedAddress) && !strings.Contains(err.Error(), "no such host") {
			t.Errorf("%s: %v, want the guard's refusal", u, err)
		}
	}
	tr.CloseIdleConnections()
}

func TestHostOverrideIsExempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{}) // overrides point at 127.0.0.1:<random port>, no Allow
	e.handle("short.test/x", redirect("https://dest.example/", http.StatusFound))
	if _, err := e.res.Resolve(ctxT(t), "http://short.test/x"); err != nil {
		t.Fatalf("override host must be exempt from the guard and port rule: %v", err)
	}
	// Overrides are matched case-insensitively.
	tr := NewTransport(GuardOptions{HostOverrides: map[string]string{"Short.Test": e.srv.Listener.Addr().String()}})
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://SHORT.test/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// stubDNS answers A queries for any name: the first with first, every later one with then. It
// speaks just enough DNS over UDP for Go's resolver.
type stubDNS struct {
	pc          net.PacketConn
	first, then [4]byte
	mu          sync.Mutex
	queries     int
}

func newStubDNS(t *testing.T, first, then string) *stubDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stubDNS{pc: pc, first: netip.MustParseAddr(first).As4(), then: netip.MustParseAddr(then).As4()}
	done := make(chan struct{})
	go func() { defer close(done); s.serve() }()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

func (s *stubDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true})
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if q.Type == dnsmessage.TypeA {
			s.mu.Lock()
			ip := s.then
			if s.queries == 0 {
				ip = s.first
			}
			s.queries++
			s.mu.Unlock()
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}, dnsmessage.AResource{A: ip})
		}
		msg, err := b.Finish()
		if err == nil {
			_, _ = s.pc.WriteTo(msg, from)
		}
	}
}

func (s *stubDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.pc.LocalAddr().String())
	}}
}

// TestDNSRebinding: a name first resolves to a public address (so a validation-time check
// passes), then to a private one when the connection is made. The dial-time guard refuses it.
func TestDNSRebinding(t *testing.T) {
	t.Parallel()
	dns := newStubDNS(t, "93.184.216.34", "127.0.0.1")
	res := dns.resolver()
	addrs, err := res.LookupNetIP(ctxT(t), "ip4", "rebind.test")
	if err != nil || len(addrs) != 1 || IsBlockedAddr(addrs[0]) {
		t.Fatalf("first answer: %v %v, want one public address", addrs, err)
	}
	if err := CheckWebhookHost("rebind.test"); err != nil {
		t.Fatalf("validation-time check: %v", err)
	}

	reg, _ := NewRegistry([]Provider{{ID: "rb", Hosts: []string{"rebind.test"}, Tier: TierStandard}})
	r := New(Options{Registry: reg, Guard: GuardOptions{Resolver: res}})
	t.Cleanup(r.Close)
	_, err = r.Resolve(ctxT(t), "http://rebind.test/x")
	if re := asError(t, err); re.Code != CodeResolveFailed || !errors.Is(err, ErrBlockedAddress) || !strings.Contains(re.Detail, "127.0.0.1") {
		t.Errorf("rebound name: %+v", re)
	}
}

func TestParseHostOverrides(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{"", map[string]string{}, false},
		{"bit.ly=127.0.0.1:8080", map[string]string{"bit.ly": "127.0.0.1:8080"}, false},
		{" Bit.ly = 127.0.0.1:8080 , t.co=[::1]:9000,, ", map[string]string{"bit.ly": "127.0.0.1:8080", "t.co": "[::1]:9000"}, false},
		{"ouo.io=emulator:80", nil, true},
		{"bit.ly", nil, true},
		{"=127.0.0.1:80", nil, true},
		{"bit.ly=127.0.0.1", nil, true},
		{"bit.ly=127.0.0.1:0", nil, true},
		{"bit.ly=127.0.0.1:99999", nil, true},
		{"bit.ly=:80", nil, true},
		{"http://bit.ly=127.0.0.1:80", nil, true},
		{"bit.ly=127.0.0.1:80,bit.ly=127.0.0.1:81", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseHostOverrides(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrBadHostOverride) {
					t.Errorf("err = %v, want ErrBadHostOverride", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestCheckWebhookHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		ok   bool
	}{
		{"hooks.example.com", true}, {"8.8.8.8", true}, {"[2606:4700::1]", true}, {"example.local.com", true},
		{"localhost", false}, {"LOCALHOST.", false}, {"app.localhost", false}, {"db.internal", false},
		{"printer.local", false}, {"127.0.0.1", false}, {"127.1", false}, {"2130706433", false},
		{"0x7f000001", false}, {"0177.0.0.1", false}, {"10.0.0.1", false}, {"169.254.169.254", false},
		{"100.64.1.1", false}, {"224.0.0.1", false}, {"[::1]", false}, {"::ffff:10.0.0.1", false},
		{"[fd00::1]", false}, {"", false},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			err := CheckWebhookHost(tc.host)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrWebhookHost) {
				t.Errorf("CheckWebhookHost(%q) = %v, want ok=%v", tc.host, err, tc.ok)
			}
		})
	}
}
