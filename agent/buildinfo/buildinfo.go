// Package buildinfo carries the version stamped in at link time
// (-ldflags "-X .../buildinfo.Version=... -X .../buildinfo.Commit=...").
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and Commit are set by the linker; the defaults mark a dev build.
var (
	Version = "dev"
	Commit  = ""
)

// CommitOrVCS returns Commit, or the VCS revision Go recorded in the binary.
func CommitOrVCS() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// String is the one-line version the CLI prints.
func String() string {
	return fmt.Sprintf("redis-consul-agent %s (commit %s, %s %s/%s)", Version, CommitOrVCS(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
