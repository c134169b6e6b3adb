package resolve

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuiltinProviders(t *testing.T) {
	t.Parallel()
	hosts := map[string]string{}
	ids := map[string]bool{}
	for _, p := range BuiltinProviders() {
		if _, err := normalizeProvider(p); err != nil {
			t.Errorf("%s: %v", p.ID, err)
		}
		if ids[p.ID] {
			t.Errorf("duplicate id %s", p.ID)
		}
		ids[p.ID] = true
		for _, h := range p.Hosts {
			if other, dup := hosts[h]; dup {
				t.Errorf("host %s in %s and %s", h, other, p.ID)
			}
			hosts[h] = p.ID
		}
	}
	for host, tier := range map[string]string{
		"bit.ly": TierStandard, "t.co": TierStandard, "tinyurl.com": TierStandard, "is.gd": TierStandard,
		"ow.ly": TierStandard, "buff.ly": TierStandard, "rebrand.ly": TierStandard, "cutt.ly": TierStandard,
		"goo.gl": TierStandard, "ouo.io": TierPremium,
	} {
		reg, _ := NewRegistry(nil)
		p, ok := reg.Lookup(host)
		if !ok || p.Tier != tier || p.Label == "" {
			t.Errorf("%s: %+v %v, want tier %s", host, p, ok, tier)
		}
	}
}

func TestRegistryLookup(t *testing.T) {
	t.Parallel()
	reg, err := NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"bit.ly", "BIT.LY", "www.bit.ly", "bit.ly.", "bit.ly:443", "Www.Bit.Ly"} {
		if p, ok := reg.Lookup(h); !ok || p.ID != "bitly" {
			t.Errorf("Lookup(%q) = %+v %v", h, p, ok)
		}
	}
	for _, h := range []string{"", "example.com", "notbit.ly", "bit.ly.evil.com", "wwwbit.ly"} {
		if p, ok := reg.Lookup(h); ok {
			t.Errorf("Lookup(%q) = %+v, want none", h, p)
		}
	}
	// Lookup hands out copies.
	p, _ := reg.Lookup("bit.ly")
	p.Hosts[0] = "mutated"
	if q, _ := reg.Lookup("bit.ly"); q.Hosts[0] != "bit.ly" {
		t.Error("Lookup result aliases the registry")
	}
}

func TestNewRegistryExtras(t *testing.T) {
	t.Parallel()
	reg, err := NewRegistry([]Provider{
		{ID: "bitly", Label: "Bitly (emulated)", Hosts: []string{"bit.ly"}, Tier: TierPremium},
		{ID: "mine", Hosts: []string{"Go.Example.COM", "t.co"}, Tier: TierStandard},
	})
	if err != nil {
		t.Fatal(err)
	}
	all := reg.All()
	if all[0].ID != "bitly" || all[0].Label != "Bitly (emulated)" || all[0].Tier != TierPremium {
		t.Errorf("override in place: %+v", all[0])
	}
	last := all[len(all)-1]
	want := Provider{ID: "mine", Label: "mine", Hosts: []string{"go.example.com", "t.co"}, Tier: TierStandard, Family: FamilyRedirect}
	if d := cmp.Diff(want, last); d != "" {
		t.Errorf("appended extra (-want +got):\n%s", d)
	}
	if p, _ := reg.Lookup("t.co"); p.ID != "mine" {
		t.Errorf("t.co belongs to %s, want the operator's provider", p.ID)
	}
	if _, ok := reg.Lookup("j.mp"); ok {
		t.Error("j.mp should have gone with the overridden bitly hosts")
	}
	for _, p := range all {
		if p.ID == "twitter" {
			t.Error("a built-in left without hosts should be dropped")
		}
	}
	if _, err := NewRegistry([]Provider{{ID: "x", Tier: "gold", Hosts: []string{"x.test"}}}); !errors.Is(err, ErrInvalidProvider) {
		t.Errorf("bad extra: %v", err)
	}
}

func TestLoadProvidersFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    []Provider
		wantErr string // substring naming the entry and the reason
	}{
		{"good", `{"providers":[{"provider":"emu","label":"Emulator","hosts":["EMU.test"],"tier":"premium","latency":"~3s"}]}`,
			[]Provider{{ID: "emu", Label: "Emulator", Hosts: []string{"emu.test"}, Tier: TierPremium, Family: FamilyRedirect, Latency: "~3s"}}, ""},
		{"family", `{"providers":[{"provider":"alf","hosts":["alf.test"],"tier":"premium","family":"adlinkfly"},{"provider":"af","hosts":["af.test"],"tier":"premium","family":"adfly"},{"provider":"fo","hosts":["fo.test"],"tier":"premium","family":"adfocus"}]}`,
			[]Provider{
				{ID: "alf", Label: "alf", Hosts: []string{"alf.test"}, Tier: TierPremium, Family: FamilyAdLinkFly},
				{ID: "af", Label: "af", Hosts: []string{"af.test"}, Tier: TierPremium, Family: FamilyAdFly},
				{ID: "fo", Label: "fo", Hosts: []string{"fo.test"}, Tier: TierPremium, Family: FamilyAdFocus},
			}, ""},
		{"bad family", `{"providers":[{"provider":"bf","hosts":["a.test"],"tier":"standard","family":"AdLinkFly"}]}`, nil, `entry 1 ("bf"): invalid provider: family "AdLinkFly" is not one of redirect, adlinkfly, adfly, adfocus`},
		{"empty list", `{"providers":[]}`, []Provider{}, ""},
		{"bad tier", `{"providers":[{"provider":"ok","hosts":["a.test"],"tier":"standard"},{"provider":"gold","hosts":["g.test"],"tier":"gold"}]}`, nil, `entry 2 ("gold"): invalid provider: tier "gold"`},
		{"no tier", `{"providers":[{"provider":"nt","hosts":["a.test"]}]}`, nil, `entry 1 ("nt"): invalid provider: tier ""`},
		{"no hosts", `{"providers":[{"provider":"nh","hosts":[],"tier":"standard"}]}`, nil, `entry 1 ("nh"): invalid provider: no hosts`},
		{"no id", `{"providers":[{"label":"x","hosts":["a.test"],"tier":"standard"}]}`, nil, `entry 1 (""): invalid provider: no provider id`},
		{"bad host", `{"providers":[{"provider":"bh","hosts":["http://a.test/"],"tier":"standard"}]}`, nil, `entry 1 ("bh")`},
		{"duplicate id", `{"providers":[{"provider":"d","hosts":["a.test"],"tier":"standard"},{"provider":"d","hosts":["b.test"],"tier":"standard"}]}`, nil, `entry 2 ("d")`},
		{"unknown field", `{"providers":[{"provider":"u","host":["a.test"],"tier":"standard"}]}`, nil, `unknown field "host"`},
		{"not json", `providers: []`, nil, "invalid provider"},
		{"trailing", `{"providers":[]} {}`, nil, "after the JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "providers.json")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadProvidersFile(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidProvider) {
					t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
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
	if _, err := LoadProvidersFile(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
