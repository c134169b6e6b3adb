// Package docs holds no code: its test keeps the repository's citations of docs/ honest.
// Comments, manifests and the docs themselves cite sections as docs/NAME.md#anchor (or
// NAME.md#anchor between docs); every such anchor must be a heading of that file.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// cite matches a citation of a docs section: docs/api.md#conventions in code, or
// (api.md#conventions) and (#conventions) in a docs page's links.
var cite = regexp.MustCompile(`(?:docs/|\()([a-z]+\.md)?#([A-Za-z0-9_-]+)`)

func TestCitedAnchorsExist(t *testing.T) {
	anchors := map[string]map[string]bool{}
	pages, err := filepath.Glob("*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs pages: %v", err)
	}
	for _, p := range pages {
		anchors[p] = headings(t, p)
	}
	checked := 0
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".json", ".yaml", ".yml":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		inDocs := filepath.Dir(path) == "."
		for _, m := range cite.FindAllStringSubmatch(string(b), -1) {
			page, anchor := m[1], m[2]
			if page == "" {
				if !inDocs || !strings.HasPrefix(m[0], "(") {
					continue
				}
				page = filepath.Base(path)
			}
			if strings.HasPrefix(m[0], "(") && !inDocs {
				continue // a markdown link outside docs/ is relative to its own folder
			}
			checked++
			if hs, ok := anchors[page]; !ok {
				t.Errorf("%s cites %s, which is not a page of docs/", path, m[0])
			} else if !hs[anchor] {
				t.Errorf("%s cites %s#%s: no such heading", path, page, anchor)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("only %d citations found: the pattern no longer matches how the repository cites docs", checked)
	}
}

// headings are the anchors a page's headings get on GitHub: lower case, punctuation other
// than - and _ dropped, spaces as hyphens, repeats numbered.
func headings(t *testing.T, page string) map[string]bool {
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fenced := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var slug strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case r == ' ':
				slug.WriteByte('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				slug.WriteRune(r)
			}
		}
		s := slug.String()
		for n := 1; out[s]; n++ {
			s = slug.String() + "-" + string(rune('0'+n))
		}
		out[s] = true
	}
	return out
}
