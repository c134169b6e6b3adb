package resolve

import "strings"

// parseRefresh parses a Refresh header or <meta http-equiv=refresh> content value with the
// HTML standard's "shared declarative refresh steps", which is what browsers do: "5; url=x",
// "0;URL='x'", "0, x", "0 x". It returns the URL string (possibly relative, possibly empty for
// a plain reload) and ok=false when the value is not a valid refresh at all.
func parseRefresh(s string) (target string, ok bool) {
	isWS := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }
	i := 0
	skipWS := func() {
		for i < len(s) && isWS(s[i]) {
			i++
		}
	}
	skipWS()
	digits := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == digits && (i >= len(s) || s[i] != '.') {
		return "", false
	}
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	if i < len(s) {
		if s[i] != ';' && s[i] != ',' && !isWS(s[i]) {
			return "", false
		}
		skipWS()
		if i < len(s) && (s[i] == ';' || s[i] == ',') {
			i++
		}
		skipWS()
	}
	if i >= len(s) {
		return "", true
	}
	rest := s[i:]
	if s[i] == 'u' || s[i] == 'U' {
		// "url" [ws] "=" [ws]; anything short of that is parsed as the URL itself.
		j := i + 1
		if j >= len(s) || (s[j] != 'r' && s[j] != 'R') {
			return strings.TrimSpace(rest), true
		}
		j++
		if j >= len(s) || (s[j] != 'l' && s[j] != 'L') {
			return strings.TrimSpace(rest), true
		}
		i = j + 1
		skipWS()
		if i >= len(s) || s[i] != '=' {
			return strings.TrimSpace(rest), true
		}
		i++
		skipWS()
	}
	urlString := s[i:]
	if i < len(s) && (s[i] == '\'' || s[i] == '"') {
		urlString = s[i+1:]
		if j := strings.IndexByte(urlString, s[i]); j >= 0 {
			urlString = urlString[:j]
		}
	}
	return strings.TrimSpace(urlString), true
}
