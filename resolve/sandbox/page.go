package sandbox

import (
	"bytes"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// page is what the sandbox needs of a parsed HTML document: the inline scripts to run and the
// elements the stub document answers lookups from.
type page struct {
	elems      []*html.Node // element nodes in document order; the stub DOM refers to them by index
	index      map[*html.Node]int
	ids        map[string]int // first element of each id, as getElementById answers
	scripts    []string       // inline JavaScript blocks in document order, within the size cap
	skipped    int            // inline JavaScript blocks left out by the size cap
	bodyOnload string         // <body onload="…">, run as a load listener
	title      string
	root       int // index of <html>, <head> and <body> (html.Parse always creates them), or -1
	head       int
	body       int
}

// parsePage parses body as a browser would (html.Parse never fails on bad markup) and collects
// scripts and elements. maxScript caps the bytes of JavaScript taken: blocks are taken in
// document order while they fit, and a block that would exceed the cap is skipped (and counted)
// while smaller later blocks may still be taken — a big inline library must not hide the small
// redirect script after it. The body's onload attribute counts against the same cap.
func parsePage(body []byte, maxScript int) *page {
	p := &page{root: -1, head: -1, body: -1, index: map[*html.Node]int{}, ids: map[string]int{}}
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil { // only on a reader error, which bytes.Reader never gives
		return p
	}
	total := 0
	take := func(src string) bool {
		if total+len(src) > maxScript {
			p.skipped++
			return false
		}
		total += len(src)
		return true
	}
	// Iterative pre-order walk: a deeply nested page must not grow the Go stack.
	for n := doc; n != nil; n = next(n, doc) {
		if n.Type != html.ElementNode {
			continue
		}
		i := len(p.elems)
		p.elems = append(p.elems, n)
		p.index[n] = i
		if id, ok := getAttr(n, "id"); ok && id != "" {
			if _, dup := p.ids[id]; !dup {
				p.ids[id] = i
			}
		}
		switch n.DataAtom {
		case atom.Html:
			if p.root < 0 {
				p.root = i
			}
		case atom.Head:
			if p.head < 0 {
				p.head = i
			}
		case atom.Body:
			if p.body < 0 {
				p.body = i
				if v, ok := getAttr(n, "onload"); ok && strings.TrimSpace(v) != "" && take(v) {
					p.bodyOnload = v
				}
			}
		case atom.Title:
			if p.title == "" {
				p.title = strings.TrimSpace(textContent(n))
			}
		case atom.Script:
			if n.Namespace != "" { // <script> inside <svg> is not run by this sandbox
				continue
			}
			if _, ok := getAttr(n, "src"); ok { // a browser ignores inline text when src is set
				continue
			}
			if typ, ok := getAttr(n, "type"); ok && !IsJSType(typ) {
				continue
			}
			src := textContent(n)
			if strings.TrimSpace(src) == "" || !take(src) {
				continue
			}
			p.scripts = append(p.scripts, src)
		}
	}
	return p
}

// next returns the node after n in a pre-order walk of the tree rooted at root, or nil.
func next(n, root *html.Node) *html.Node {
	if n.FirstChild != nil {
		return n.FirstChild
	}
	for ; n != root; n = n.Parent {
		if n.NextSibling != nil {
			return n.NextSibling
		}
	}
	return nil
}

func getAttr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// IsJSType reports whether a <script type> is one a browser runs as classic or module
// JavaScript. Package resolve's literal scan uses it too, so both read the same scripts.
func IsJSType(t string) bool {
	t = strings.ToLower(strings.TrimSpace(t))
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = strings.TrimSpace(t[:i])
	}
	switch t {
	case "", "module", "text/javascript", "application/javascript", "text/ecmascript",
		"application/ecmascript", "application/x-javascript", "text/jscript":
		return true
	}
	return false
}

// textContent is the DOM's textContent: the text of every descendant text node, in order.
func textContent(n *html.Node) string {
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = next(c, n) {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return b.String()
}

// innerHTML serialises n's children as the DOM's innerHTML would (close enough for scripts that
// read markup back).
func innerHTML(n *html.Node) string {
	var b bytes.Buffer
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if err := html.Render(&b, c); err != nil {
			break
		}
	}
	return b.String()
}

// byID returns the index of the first element whose id is id, as getElementById does, or -1.
func (p *page) byID(id string) int {
	if i, ok := p.ids[id]; ok {
		return i
	}
	return -1
}

// selector is one compound CSS selector: tag#id.class[attr][attr=value], every part optional.
type selector struct {
	tag     string
	id      string
	classes []string
	attrs   []attrSel
}

type attrSel struct {
	key, val string
	hasVal   bool
}

// parseSelectors parses a comma-separated list of compound selectors. Anything richer
// (combinators, pseudo-classes) is unsupported and yields ok=false, which the stub answers as
// "nothing matches" rather than a syntax error, so a script using it goes on.
func parseSelectors(s string) ([]selector, bool) {
	var out []selector
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, false
		}
		var sel selector
		for part != "" {
			switch part[0] {
			case '#', '.':
				name, rest := cutName(part[1:])
				if name == "" {
					return nil, false
				}
				if part[0] == '#' {
					sel.id = name
				} else {
					sel.classes = append(sel.classes, name)
				}
				part = rest
			case '[':
				end := strings.IndexByte(part, ']')
				if end < 0 {
					return nil, false
				}
				body := part[1:end]
				part = part[end+1:]
				var a attrSel
				if k, v, ok := strings.Cut(body, "="); ok {
					a = attrSel{key: strings.ToLower(strings.TrimSpace(k)), val: strings.Trim(strings.TrimSpace(v), `"'`), hasVal: true}
				} else {
					a = attrSel{key: strings.ToLower(strings.TrimSpace(body))}
				}
				if a.key == "" {
					return nil, false
				}
				sel.attrs = append(sel.attrs, a)
			case '*':
				part = part[1:]
			default:
				name, rest := cutName(part)
				if name == "" || sel.tag != "" {
					return nil, false
				}
				sel.tag = strings.ToLower(name)
				part = rest
			}
		}
		out = append(out, sel)
	}
	return out, len(out) > 0
}

// cutName splits off a leading CSS identifier (letters, digits, '-', '_', non-ASCII).
func cutName(s string) (string, string) {
	i := 0
	for i < len(s) {
		c := s[i]
		if c >= 0x80 || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			i++
			continue
		}
		break
	}
	return s[:i], s[i:]
}

func (s selector) matches(n *html.Node) bool {
	if s.tag != "" && !strings.EqualFold(n.Data, s.tag) {
		return false
	}
	if s.id != "" {
		if v, _ := getAttr(n, "id"); v != s.id {
			return false
		}
	}
	if len(s.classes) > 0 {
		v, _ := getAttr(n, "class")
		have := strings.Fields(v)
		for _, c := range s.classes {
			found := false
			for _, h := range have {
				if h == c {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
	}
	for _, a := range s.attrs {
		v, ok := getAttr(n, a.key)
		if !ok || a.hasVal && v != a.val {
			return false
		}
	}
	return true
}

// maxSelected bounds the elements one querySelectorAll-like call returns.
const maxSelected = 1000

// query returns the indexes of the elements matching sel in document order, only descendants of
// the element at scope when scope >= 0, at most one when !all and at most maxSelected.
func (p *page) query(sel string, scope int, all bool) []int {
	sels, ok := parseSelectors(sel)
	if !ok || len(p.elems) == 0 {
		return nil
	}
	root := p.elems[0].Parent // the document node
	if scope >= 0 && scope < len(p.elems) {
		root = p.elems[scope]
	}
	var out []int
	for n := next(root, root); n != nil; n = next(n, root) {
		if n.Type != html.ElementNode {
			continue
		}
		for _, s := range sels {
			if s.matches(n) {
				out = append(out, p.index[n])
				break
			}
		}
		if len(out) > 0 && !all || len(out) >= maxSelected {
			break
		}
	}
	return out
}
