package resolve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Provider tiers.
const (
	TierStandard = "standard" // plain shorteners: one or a few redirects
	TierPremium  = "premium"  // ad-gated providers: interstitials, timers, often captchas
)

// Provider families: how a provider's pages are walked (docs/resolving.md#provider-families).
// Every family also gets the generic hop kinds.
const (
	// FamilyRedirect is the default: redirects, Refresh, meta refresh, JavaScript location
	// assignments and wrapper URLs only.
	FamilyRedirect = "redirect"
	// FamilyAdLinkFly is the AdLinkFly interstitial: a countdown, then a form POSTed to
	// /links/go whose JSON answer carries the next URL.
	FamilyAdLinkFly = "adlinkfly"
	// FamilyAdFly is the adf.ly page shape: the destination encoded in `var ysmm`.
	FamilyAdFly = "adfly"
	// FamilyAdFocus is the adfoc.us page shape: the destination in a `click_url` script variable.
	FamilyAdFocus = "adfocus"
)

// Families lists every known family, in the order the docs present them.
func Families() []string {
	return []string{FamilyRedirect, FamilyAdLinkFly, FamilyAdFly, FamilyAdFocus}
}

// Provider is one link provider, in the JSON shape of GET /v1/providers entries.
type Provider struct {
	ID     string   `json:"provider"`
	Label  string   `json:"label"`
	Hosts  []string `json:"hosts"`
	Tier   string   `json:"tier"`   // "standard" | "premium"
	Family string   `json:"family"` // one of Families(); empty in a providers file means "redirect"
	// Latency is a human string, e.g. "~2s"; filled from measurements when known.
	Latency string `json:"latency"`
}

// BuiltinProviders returns the providers linkhop knows without configuration, in a stable order.
// The latency strings are rough expectations until the service has measured its own.
func BuiltinProviders() []Provider {
	std := func(id, label string, hosts ...string) Provider {
		return Provider{ID: id, Label: label, Hosts: hosts, Tier: TierStandard, Family: FamilyRedirect, Latency: "~1s"}
	}
	prem := func(id, label, family string, hosts ...string) Provider {
		return Provider{ID: id, Label: label, Hosts: hosts, Tier: TierPremium, Family: family, Latency: "~5s"}
	}
	return []Provider{
		std("bitly", "Bitly", "bit.ly", "j.mp", "bitly.is"),
		std("twitter", "X (Twitter) t.co", "t.co"),
		std("tinyurl", "TinyURL", "tinyurl.com", "preview.tinyurl.com", "tiny.one"),
		std("isgd", "is.gd", "is.gd", "v.gd"),
		std("owly", "Hootsuite Ow.ly", "ow.ly"),
		std("buffer", "Buffer buff.ly", "buff.ly"),
		std("rebrandly", "Rebrandly", "rebrand.ly", "rb.gy"),
		std("cuttly", "Cutt.ly", "cutt.ly"),
		std("googl", "Google goo.gl", "goo.gl"),
		std("tinycc", "tiny.cc", "tiny.cc"),
		std("shorturl", "ShortURL.at", "shorturl.at"),
		std("tly", "T.LY", "t.ly"),
		std("sid", "S.id", "s.id"),
		std("linkedin", "LinkedIn lnkd.in", "lnkd.in"),
		std("facebook", "Facebook fb.me", "fb.me"),
		std("amazon", "Amazon amzn.to", "amzn.to", "a.co"),
		std("youtube", "YouTube youtu.be", "youtu.be"),
		std("dlvrit", "dlvr.it", "dlvr.it"),
		std("tribal", "trib.al", "trib.al"),
		// The families of the ad-gated sites, and what their real pages do today, are in the
		// table of docs/resolving.md#built-in-providers; keep the two in step.
		prem("ouo", "ouo.io", FamilyRedirect, "ouo.io", "ouo.press"),
		prem("adfly", "AdFly", FamilyAdFly, "adf.ly", "j.gs", "q.gs"),
		prem("adfocus", "AdFocus", FamilyAdFocus, "adfoc.us"),
		prem("shortest", "Shorte.st", FamilyRedirect, "sh.st", "shorte.st"),
		prem("linkvertise", "Linkvertise", FamilyRedirect, "linkvertise.com", "link-to.net", "up-to-down.net"),
		prem("bcvc", "bc.vc", FamilyRedirect, "bc.vc"),
		prem("exeio", "exe.io", FamilyAdLinkFly, "exe.io", "exey.io"),
		prem("shrinkme", "ShrinkMe", FamilyAdLinkFly, "shrinkme.io"),
	}
}

// providersFile is the JSON shape of LINKHOP_PROVIDERS_FILE and of the GET /v1/providers body.
type providersFile struct {
	Providers []Provider `json:"providers"`
}

// LoadProvidersFile reads extra providers from a JSON file in the shape of the GET /v1/providers
// body. Unknown fields are refused (a typo like "host" should not silently drop hosts); a bad entry
// is an error naming the entry by position and id.
func LoadProvidersFile(path string) ([]Provider, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading providers file: %w", err)
	}
	return parseProviders(data)
}

func parseProviders(data []byte) ([]Provider, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f providersFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: providers file is not a {\"providers\":[…]} JSON object: %w", ErrInvalidProvider, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: providers file has data after the JSON object", ErrInvalidProvider)
	}
	seen := map[string]int{}
	out := make([]Provider, 0, len(f.Providers))
	for i, p := range f.Providers {
		p, err := normalizeProvider(p)
		if err != nil {
			return nil, fmt.Errorf("providers file: entry %d (%q): %w", i+1, p.ID, err)
		}
		if j, dup := seen[p.ID]; dup {
			return nil, fmt.Errorf("providers file: entry %d (%q): %w: id already used by entry %d", i+1, p.ID, ErrInvalidProvider, j)
		}
		seen[p.ID] = i + 1
		out = append(out, p)
	}
	return out, nil
}

// normalizeProvider validates p and returns it with lower-case hosts and a default label.
func normalizeProvider(p Provider) (Provider, error) {
	p.ID = strings.TrimSpace(p.ID)
	if p.ID == "" {
		return p, fmt.Errorf("%w: no provider id", ErrInvalidProvider)
	}
	if p.Tier != TierStandard && p.Tier != TierPremium {
		return p, fmt.Errorf("%w: tier %q is not %q or %q", ErrInvalidProvider, p.Tier, TierStandard, TierPremium)
	}
	if p.Family == "" {
		p.Family = FamilyRedirect
	}
	if !slices.Contains(Families(), p.Family) {
		return p, fmt.Errorf("%w: family %q is not one of %s", ErrInvalidProvider, p.Family, strings.Join(Families(), ", "))
	}
	if len(p.Hosts) == 0 {
		return p, fmt.Errorf("%w: no hosts", ErrInvalidProvider)
	}
	hosts := make([]string, 0, len(p.Hosts))
	for _, h := range p.Hosts {
		n := canonicalHost(h)
		if n == "" || strings.ContainsAny(n, "/:@ ?#\t") {
			return p, fmt.Errorf("%w: host %q is not a bare host name", ErrInvalidProvider, h)
		}
		if !slices.Contains(hosts, n) {
			hosts = append(hosts, n)
		}
	}
	p.Hosts = hosts
	if p.Label == "" {
		p.Label = p.ID
	}
	return p, nil
}

// canonicalHost lower-cases h and drops a trailing dot.
func canonicalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// Registry answers which provider a host belongs to. It is immutable after NewRegistry and safe
// for concurrent use.
type Registry struct {
	providers []Provider
	byHost    map[string]int // canonical host without "www." -> index in providers
}

// NewRegistry builds a registry of the built-in providers plus extra. An extra provider with a
// built-in's ID replaces it in place; other extras are appended in their order. A host claimed by
// an extra provider is taken away from any built-in that had it (the operator's file wins).
func NewRegistry(extra []Provider) (*Registry, error) {
	list := BuiltinProviders()
	for i, p := range extra {
		n, err := normalizeProvider(p)
		if err != nil {
			return nil, fmt.Errorf("provider %d (%q): %w", i+1, p.ID, err)
		}
		// Take the extra's hosts away from every other provider.
		for j := range list {
			if list[j].ID == n.ID {
				continue
			}
			list[j].Hosts = slices.DeleteFunc(slices.Clone(list[j].Hosts), func(h string) bool {
				return slices.ContainsFunc(n.Hosts, func(x string) bool { return stripWWW(x) == stripWWW(h) })
			})
		}
		if k := slices.IndexFunc(list, func(q Provider) bool { return q.ID == n.ID }); k >= 0 {
			list[k] = n
		} else {
			list = append(list, n)
		}
	}
	// A built-in left without hosts no longer serves anything.
	list = slices.DeleteFunc(list, func(p Provider) bool { return len(p.Hosts) == 0 })
	r := &Registry{providers: list, byHost: map[string]int{}}
	for i, p := range list {
		for _, h := range p.Hosts {
			r.byHost[stripWWW(h)] = i
		}
	}
	return r, nil
}

func stripWWW(h string) string { return strings.TrimPrefix(h, "www.") }

// Lookup returns the provider of host. It is case-insensitive, tolerates a trailing dot, a
// ":port" suffix and a "www." prefix on either side.
func (r *Registry) Lookup(host string) (Provider, bool) {
	if r == nil {
		return Provider{}, false
	}
	h := canonicalHost(host)
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i > 0 {
			h = h[1:i]
		}
	} else if i := strings.LastIndex(h, ":"); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	i, ok := r.byHost[stripWWW(canonicalHost(h))]
	if !ok {
		return Provider{}, false
	}
	return cloneProvider(r.providers[i]), true
}

// All returns every provider in a stable order: built-ins first, then extras.
func (r *Registry) All() []Provider {
	if r == nil {
		return nil
	}
	out := make([]Provider, len(r.providers))
	for i, p := range r.providers {
		out[i] = cloneProvider(p)
	}
	return out
}

func cloneProvider(p Provider) Provider {
	p.Hosts = slices.Clone(p.Hosts)
	return p
}
