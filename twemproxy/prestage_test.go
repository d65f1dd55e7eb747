package twemproxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// countingNutcracker is the real nutcracker behind a script that appends a
// line to a file at each call, so a test can tell whether --test-conf ran.
func countingNutcracker(t *testing.T) (bin string, calls func() int) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	bin = filepath.Join(dir, "nutcracker")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\nexec %q \"$@\"\n", log, nutcrackerBin(t))
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, func() int {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), "\n")
	}
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), tempInfix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// TestRunnerPrestage: at the first sign of a failover the runner validates
// the file of each candidate replica; the promotion then renames the chosen
// one into place without running nutcracker --test-conf, and the file of the
// candidate not chosen is removed. A candidate whose file nutcracker would
// refuse is reported and not staged.
func TestRunnerPrestage(t *testing.T) {
	l1, l2 := freeAddr(t), freeAddr(t)
	orig := twoPoolConfig(l1, l2)
	bin, calls := countingNutcracker(t)
	e := newRunnerEnv(t, orig, map[string]string{"shard-a": "127.0.0.1:7001", "shard-b": "127.0.0.1:7002"}, func(o *Options) {
		o.NutcrackerBin = bin
	})
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("alpha").Status == consulreg.Passing })
	dir := filepath.Dir(e.file)

	n, err := e.runner.Prestage(context.Background(), []Candidate{
		{Name: "shard-a", Addr: "127.0.0.1:7101"},
		{Name: "shard-a", Addr: "127.0.0.1:7201"},
		{Name: "shard-a", Addr: "bad#host:7301"},  // never a valid server
		{Name: "shard-a", Addr: "127.0.0.1:7001"}, // the current master: nothing to stage
	})
	if n != 2 || err == nil || !strings.Contains(err.Error(), "bad#host") {
		t.Fatalf("Prestage = %d, %v; want 2 staged and an error naming bad#host", n, err)
	}
	staged := tempFiles(t, dir)
	if len(staged) != 2 {
		t.Fatalf("staged files: %v", staged)
	}
	validated := calls()
	if validated != 2 {
		t.Errorf("%d nutcracker calls for two staged files", validated)
	}
	if got := e.read(); got != orig {
		t.Errorf("Prestage changed the file:\n%s", got)
	}
	// Staging the same candidates again does no work.
	if n, _ := e.runner.Prestage(context.Background(), []Candidate{{"shard-a", "127.0.0.1:7101"}, {"shard-a", "127.0.0.1:7201"}}); n != 2 || calls() != validated {
		t.Errorf("restaging: %d staged, %d more nutcracker calls", n, calls()-validated)
	}
	var chosen string
	for _, f := range staged {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "127.0.0.1:7101:2 shard-a") {
			chosen = f
		}
	}
	ino := inode(t, chosen)

	e.src.set("shard-a", "127.0.0.1:7101")
	waitFor(t, 5*time.Second, "the promotion applied", func() bool {
		st := e.runner.Status()
		return st.LastRun != nil && st.LastRun.Result == "ok" && st.Restarts == 1
	})
	if got, want := e.read(), strings.Replace(orig, "127.0.0.1:7001:2", "127.0.0.1:7101:2", 1); got != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
	if got := inode(t, e.file); got != ino {
		t.Errorf("the config is not the staged file (inode %d, staged %d)", got, ino)
	}
	if c := calls(); c != validated {
		t.Errorf("nutcracker --test-conf ran %d times at the promotion", c-validated)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("the candidate not chosen left files: %v", left)
	}
	if b, _ := os.ReadFile(e.file + BackupSuffix); string(b) != orig {
		t.Errorf("backup is not the previous file")
	}

	// A staged file that no promotion uses is gone after shutdown.
	if n, err := e.runner.Prestage(context.Background(), []Candidate{{"shard-b", "127.0.0.1:7102"}}); n != 1 || err != nil {
		t.Fatalf("Prestage = %d, %v", n, err)
	}
	e.stop()
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("staged files left after shutdown: %v", left)
	}
}

// TestRunnerPrestagedFileOfAnOlderConfigIsNotUsed: a file staged before the
// config changed is not renamed over the newer config, since its bytes are
// not what the pipeline wants.
func TestRunnerPrestagedFileOfAnOlderConfigIsNotUsed(t *testing.T) {
	l1, l2 := freeAddr(t), freeAddr(t)
	orig := twoPoolConfig(l1, l2)
	e := newRunnerEnv(t, orig, map[string]string{"shard-a": "127.0.0.1:7001", "shard-b": "127.0.0.1:7002"}, nil)
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("alpha").Status == consulreg.Passing })
	if n, err := e.runner.Prestage(context.Background(), []Candidate{{"shard-a", "127.0.0.1:7101"}}); n != 1 || err != nil {
		t.Fatalf("Prestage = %d, %v", n, err)
	}
	// shard-b fails over first; then shard-a to the staged candidate.
	e.src.set("shard-b", "127.0.0.1:7102")
	waitFor(t, 5*time.Second, "shard-b applied", func() bool { return e.runner.Status().Restarts == 1 })
	e.src.set("shard-a", "127.0.0.1:7101")
	waitFor(t, 5*time.Second, "shard-a applied", func() bool {
		st := e.runner.Status()
		return st.Restarts == 2 && st.LastRun != nil && st.LastRun.Result == "ok"
	})
	want := strings.ReplaceAll(strings.Replace(orig, "127.0.0.1:7001:2", "127.0.0.1:7101:2", 1), "127.0.0.1:7002:1", "127.0.0.1:7102:1")
	if got := e.read(); got != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
	if left := tempFiles(t, filepath.Dir(e.file)); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}
