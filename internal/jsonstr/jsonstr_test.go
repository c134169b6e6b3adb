package jsonstr

import (
	"encoding/json"
	"testing"
)

func TestAppendMatchesEncoding(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "plain", "https://sho.rt/a?b=c&d=<e>", `quote " and \ backslash`, "tab\tnl\ncr\r\b\f\x00\x1f",
		"ünïcödé ✓ 😀", "line\u2028sep\u2029", "bad utf-8 \xff\xfe", "\x7f", "/slashes/", "<script>",
	} {
		want, _ := json.Marshal(s)
		if got := Append([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("Append(%q) = %s, want x%s", s, got, want)
		}
	}
}

func FuzzAppend(f *testing.F) {
	f.Add("plain")
	f.Add("<\xff\u2028")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := Append(nil, s); string(got) != string(want) {
			t.Errorf("Append(%q) = %s, want %s", s, got, want)
		}
	})
}
