package buildinfo

import (
	"regexp"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	t.Parallel()
	s := String()
	if !regexp.MustCompile(`^linkhop \S+ \(revision (unknown|[0-9a-f]{1,12}(-dirty)?), go\S+\)$`).MatchString(s) {
		t.Errorf("String() = %q", s)
	}
	if !strings.Contains(s, Version) || GoVersion() == "" {
		t.Errorf("String() = %q lacks the version", s)
	}
}
