package k8s_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/linkhop/linkhop/config"
)

// repoRoot is the main module, two directories up.
const repoRoot = "../.."

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, …
	args string
}

// readDockerfile splits the Dockerfile into instructions. It knows only what this
// Dockerfile uses: comments, backslash continuations, one instruction per logical line.
func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || trimmed == "" && cur.Len() == 0 {
			continue
		}
		cont := strings.HasSuffix(trimmed, "\\")
		cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
		cur.WriteString(" ")
		if cont {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

// TestDockerfile holds the Dockerfile to what the manifests run: the binaries at the paths
// the Deployments' commands name, built static from the main packages, a non-root numeric
// user equal to the pods' runAsUser, the Go version of go.mod and the default ports.
func TestDockerfile(t *testing.T) {
	ins := readDockerfile(t)
	last := -1
	for i, in := range ins {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last <= 0 {
		t.Fatal("want a multi-stage Dockerfile")
	}
	build, final := ins[:last], ins[last:]

	t.Run("build stage", func(t *testing.T) {
		var goVersion, from string
		var run string
		for _, in := range build {
			switch in.cmd {
			case "ARG":
				if v, ok := strings.CutPrefix(in.args, "GO_VERSION="); ok {
					goVersion = v
				}
			case "FROM":
				from = in.args
			case "RUN":
				run += in.args + "\n"
			}
		}
		if !strings.Contains(from, "golang:${GO_VERSION}") {
			t.Errorf("builder FROM %q, want golang:${GO_VERSION}", from)
		}
		if want := goModMinor(t); goVersion != want {
			t.Errorf("GO_VERSION=%q, go.mod asks for %s", goVersion, want)
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-o /out/"} {
			if !strings.Contains(run, want) {
				t.Errorf("the build lacks %q", want)
			}
		}
		for path := range binaries {
			if pkg := "./cmd/" + filepath.Base(path); !slices.Contains(strings.Fields(run), pkg) {
				t.Errorf("the build does not build %s", pkg)
			}
		}
	})

	t.Run("final stage", func(t *testing.T) {
		from := final[0].args
		if !strings.Contains(from, "distroless/static") || !strings.HasSuffix(from, ":nonroot") {
			t.Errorf("final FROM %q, want distroless/static…:nonroot", from)
		}
		installed := map[string]bool{}
		var user, entrypoint string
		var exposed []string
		for _, in := range final[1:] {
			switch in.cmd {
			case "COPY":
				f := strings.Fields(in.args)
				if len(f) != 3 || !strings.HasPrefix(f[0], "--from=") {
					t.Errorf("COPY %s: the final stage copies only single files from the build", in.args)
					continue
				}
				installed[f[2]] = true
			case "USER":
				user = in.args
			case "ENTRYPOINT":
				entrypoint = in.args
			case "EXPOSE":
				exposed = append(exposed, strings.Fields(in.args)...)
			case "RUN", "ADD":
				t.Errorf("%s in the final stage: the base has no shell", in.cmd)
			}
		}
		for path := range binaries {
			if !installed[path] {
				t.Errorf("the image has no %s, which a Deployment runs", path)
			}
		}
		uid, _, _ := strings.Cut(user, ":")
		if n, err := strconv.Atoi(uid); err != nil || n != imageUser {
			t.Errorf("USER %q: want the numeric %d (runAsNonRoot cannot verify a name)", user, imageUser)
		}
		var ep []string
		if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 1 || ep[0] != "/usr/local/bin/api" {
			t.Errorf("ENTRYPOINT %s, want [\"/usr/local/bin/api\"] in exec form", entrypoint)
		}
		for _, addr := range []string{config.DefaultAPIAddr, config.DefaultWorkerAddr} {
			_, port, _ := net.SplitHostPort(addr)
			if !slices.Contains(exposed, port) {
				t.Errorf("EXPOSE %v lacks the default port %s", exposed, port)
			}
		}
	})

	// The main packages arrive with the foundation; until then there is nothing to check.
	for path := range binaries {
		dir := filepath.Join(repoRoot, "cmd", filepath.Base(path))
		t.Run("cmd/"+filepath.Base(path), func(t *testing.T) {
			if _, err := os.Stat(dir); os.IsNotExist(err) {
				t.Skipf("%s does not exist yet", dir)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			main := false
			for _, e := range entries {
				if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
					f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, n), nil, parser.PackageClauseOnly)
					if err != nil {
						t.Fatal(err)
					}
					main = main || f.Name.Name == "main"
				}
			}
			if !main {
				t.Errorf("%s is not a main package", dir)
			}
		})
	}
}

// goModMinor is "1.N" of the main module's go directive.
func goModMinor(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			parts := strings.Split(v, ".")
			if len(parts) >= 2 {
				return parts[0] + "." + parts[1]
			}
		}
	}
	t.Fatal("go.mod has no go directive")
	return ""
}
