package buildinfo_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinariesReportVersion builds the three binaries with the version stamped the way the
// Dockerfile stamps it, and checks what --version and -h answer (docs/operations.md#versions).
func TestBinariesReportVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	t.Parallel()
	dir := t.TempDir()
	const stamp = "-X github.com/linkhop/linkhop/internal/buildinfo.Version=v9.8.7-test " +
		"-X github.com/linkhop/linkhop/internal/buildinfo.stampedRevision=abcdef123456"
	build := exec.Command("go", "build", "-ldflags", stamp, "-o", dir+string(filepath.Separator), "./cmd/api", "./cmd/worker", "./cmd/linkhop")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const want = "linkhop v9.8.7-test (revision abcdef123456, go"
	for _, tc := range []struct {
		bin      string
		args     []string
		code     int
		stdout   string // substring
		anywhere string // substring of stdout+stderr
	}{
		{"api", []string{"-version"}, 0, want, ""},
		{"api", []string{"--version"}, 0, want, ""},
		{"worker", []string{"-version"}, 0, want, ""},
		{"linkhop", []string{"--version"}, 0, want, ""},
		{"linkhop", []string{"version"}, 0, want, ""},
		{"api", []string{"-h"}, 0, "", "Usage: api"},
		{"worker", []string{"-h"}, 0, "", "Usage: worker"},
		{"worker", []string{"--help"}, 0, "", "Usage: worker"},
		{"worker", []string{"start"}, 2, "", `unexpected argument "start"`},
		{"api", []string{"serve"}, 2, "", `unknown command "serve"`},
		{"api", []string{"keys", "frobnicate"}, 2, "", `unknown command "frobnicate"`},
	} {
		cmd := exec.Command(filepath.Join(dir, tc.bin), tc.args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		name := tc.bin + " " + strings.Join(tc.args, " ")
		if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stdout.String()+stderr.String(), tc.anywhere) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d with %q / %q", name, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.anywhere)
		}
	}
}
