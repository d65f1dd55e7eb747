package demo

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestRemoveStale removes only the directories of demos whose process is
// gone, recognised by the marker; everything else under the temp dir stays.
func TestRemoveStale(t *testing.T) {
	tmp := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Process.Kill(); _ = live.Wait() })
	dirs := map[string]struct {
		marker string // "" = none
		kept   bool
	}{
		"rca-demo-dead":    {strconv.Itoa(dead.Process.Pid), false},
		"rca-demo-live":    {strconv.Itoa(live.Process.Pid), true},
		"rca-demo-self":    {strconv.Itoa(os.Getpid()), true},
		"rca-demo-nomark":  {"", true},
		"rca-demo-garbage": {"not a pid", true},
		"other-dead":       {strconv.Itoa(dead.Process.Pid), true},
	}
	for name, d := range dirs {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Join(p, "consul-demo"), 0o755); err != nil {
			t.Fatal(err)
		}
		if d.marker != "" {
			if err := os.WriteFile(filepath.Join(p, markerFile), []byte(d.marker+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	removeStale(io.Discard, tmp)
	for name, d := range dirs {
		_, err := os.Stat(filepath.Join(tmp, name))
		if kept := err == nil; kept != d.kept {
			t.Errorf("%s: kept=%v, want %v", name, kept, d.kept)
		}
	}
}

// TestNewDirMarks writes the marker with this process's PID and removes the
// directory when asked.
func TestNewDirMarks(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir, remove, err := newDir(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil || string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("marker %q, %v", b, err)
	}
	remove()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there after remove: %v", dir, err)
	}
}
