// Package buildinfo says which build of linkhop is running: the version stamped at link time,
// the VCS revision Go records, and the Go version. Every binary reports it with --version, in
// its start-up log line and in the linkhop_build_info metric, and webhook deliveries carry the
// version in their User-Agent.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Version is the release version, stamped at link time:
//
//	go build -ldflags "-X github.com/linkhop/linkhop/internal/buildinfo.Version=v1.2.3" ./cmd/...
//
// A plain `go build` or `go run` says "dev".
var Version = "dev"

// stampedRevision is the revision stamped at link time (-X …buildinfo.stampedRevision=…), for
// builds without the VCS data Go records itself (a container build without .git).
var stampedRevision = ""

var revision = sync.OnceValue(func() string {
	if stampedRevision != "" {
		return stampedRevision
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		// go run, go test and builds outside a checkout record no VCS data.
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
})

// Revision is the VCS revision the binary was built from (12 hex digits, "-dirty" when the
// tree had changes), or "unknown".
func Revision() string { return revision() }

// GoVersion is the Go toolchain that built the binary.
func GoVersion() string { return runtime.Version() }

// String is the one line `--version` prints: "linkhop v1.2.3 (revision 0123456789ab, go1.26.8)".
func String() string {
	return "linkhop " + Version + " (revision " + Revision() + ", " + GoVersion() + ")"
}
