package twemproxy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nc.yml")

	wrote, err := WriteAtomic(path, []byte("one\n"), WriteOptions{Backup: true})
	if err != nil || !wrote {
		t.Fatalf("first write: %v %v", wrote, err)
	}
	if _, err := os.Stat(path + BackupSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backup of a file that did not exist: %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}

	wrote, err = WriteAtomic(path, []byte("one\n"), WriteOptions{Backup: true})
	if err != nil || wrote {
		t.Fatalf("same bytes: wrote=%v err=%v", wrote, err)
	}
	if st, _ := os.Stat(path); !st.ModTime().Equal(old) {
		t.Errorf("same bytes touched the file")
	}

	var checked string
	wrote, err = WriteAtomic(path, []byte("two\n"), WriteOptions{Backup: true, Check: func(tmp string) error {
		b, _ := os.ReadFile(tmp)
		checked = string(b)
		if filepath.Dir(tmp) != dir {
			t.Errorf("temp file %s not beside the config", tmp)
		}
		return nil
	}})
	if err != nil || !wrote {
		t.Fatalf("second write: %v %v", wrote, err)
	}
	if checked != "two\n" {
		t.Errorf("check saw %q", checked)
	}
	assertFile(t, path, "two\n")
	assertFile(t, path+BackupSuffix, "one\n")
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}

	_, err = WriteAtomic(path, []byte("three\n"), WriteOptions{Backup: true, Check: func(string) error { return errors.New("nope") }})
	if err == nil || err.Error() != "nope" {
		t.Fatalf("failed check: %v", err)
	}
	assertFile(t, path, "two\n")
	assertFile(t, path+BackupSuffix, "one\n")
	assertNoTemp(t, dir)

	// A rollback does not touch the backup.
	if _, err := WriteAtomic(path, []byte("one\n"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	assertFile(t, path+BackupSuffix, "one\n")
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s = %q, want %q", filepath.Base(path), b, want)
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), tempInfix) || strings.HasPrefix(e.Name(), ".rca-check-") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

type crash struct{}

// TestWriteAtomicCrashPoints stops a write at each crash point (a panic in
// place of the SIGKILL) and checks that the file is the old or the new one
// and that CleanTemp removes what was left.
func TestWriteAtomicCrashPoints(t *testing.T) {
	for _, tc := range []struct{ point, want, backup string }{
		{"after-temp-write", "old\n", ""},
		{"after-backup", "old\n", "old\n"},
		{"after-rename", "new\n", "old\n"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "nc.yml")
			if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			stop := func(p string) {
				if p == tc.point {
					panic(crash{})
				}
			}
			func() {
				defer func() {
					if r := recover(); r != (crash{}) {
						t.Fatalf("no crash at %s: %v", tc.point, r)
					}
				}()
				_, _ = WriteAtomic(path, []byte("new\n"), WriteOptions{Backup: true, CrashPoint: stop})
			}()
			assertFile(t, path, tc.want)
			if tc.backup != "" {
				assertFile(t, path+BackupSuffix, tc.backup)
			}
			if err := CleanTemp(path); err != nil {
				t.Fatal(err)
			}
			assertNoTemp(t, dir)
		})
	}
}

// writeCrashEnv names the crash point at which the helper process of
// TestWriteAtomicSIGKILL kills itself.
const writeCrashEnv = "RCA_TEST_WRITE_CRASH_POINT"

// TestWriteAtomicSIGKILL kills a real process (this test binary, re-run as
// a helper) in the middle of a write.
func TestWriteAtomicSIGKILL(t *testing.T) {
	if dir := os.Getenv("RCA_TEST_WRITE_HELPER"); dir != "" {
		point := os.Getenv(writeCrashEnv)
		kill := func(p string) {
			if p == point {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
		_, err := WriteAtomic(filepath.Join(dir, "nc.yml"), []byte("new\n"), WriteOptions{Backup: true, CrashPoint: kill})
		t.Fatalf("survived the crash point: %v", err)
	}
	for _, tc := range []struct{ point, want string }{
		{"after-temp-write", "old\n"},
		{"after-backup", "old\n"},
		{"after-rename", "new\n"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "nc.yml")
			if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestWriteAtomicSIGKILL$")
			cmd.Env = append(os.Environ(), "RCA_TEST_WRITE_HELPER="+dir, writeCrashEnv+"="+tc.point)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper was not SIGKILLed: %v\n%s", err, out)
			}
			assertFile(t, path, tc.want)
		})
	}
}

func TestWriteAtomicKeepsASymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "releases", "nc.yml")
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "nutcracker.yml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteAtomic(link, []byte("new\n"), WriteOptions{Backup: true}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v", err)
	}
	assertFile(t, real, "new\n")
	assertFile(t, real+BackupSuffix, "old\n")
	assertNoTemp(t, filepath.Dir(real))
}
