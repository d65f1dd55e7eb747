package demo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A directory the demo created holds this file with the demo's PID, so a later
// demo can tell its leftovers (the demo was SIGKILLed and could not clean up)
// from anything else under the temp dir.
const (
	dirPattern = "rca-demo-"
	markerFile = ".rca-demo-pid"
)

// newDir creates the demo's temp directory with its marker, after removing
// the directories of earlier demos whose process is gone. The returned
// function removes the new directory.
func newDir(out io.Writer) (string, func(), error) {
	removeStale(out, os.TempDir())
	dir, err := os.MkdirTemp("", dirPattern)
	if err != nil {
		return "", nil, fmt.Errorf("demo dir: %w", err)
	}
	remove := func() { _ = os.RemoveAll(dir) }
	if err := os.WriteFile(filepath.Join(dir, markerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		remove()
		return "", nil, fmt.Errorf("demo dir: %w", err)
	}
	return dir, remove, nil
}

// removeStale removes every rca-demo-* directory under tmp whose marker names
// a process that no longer exists. A directory without a marker, with one that
// does not parse, or whose PID is alive (even if reused) is left alone.
func removeStale(out io.Writer, tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPattern+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, markerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() || !gone(pid) {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			fmt.Fprintf(out, "could not remove %s, left by a demo that was killed (pid %d): %v\n", d, pid, err)
			continue
		}
		fmt.Fprintf(out, "removed %s, left by a demo that was killed (pid %d)\n", d, pid)
	}
}

// gone reports whether no process has this PID.
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
