package twemproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// BackupSuffix names the copy of the previous config kept beside the file:
// the last version that nutcracker ran before the agent's latest rewrite.
const BackupSuffix = ".rca-backup"

// tempInfix marks the agent's temp files so a later start can remove the
// ones a crash left behind.
const tempInfix = ".rca-tmp-"

// CrashPointEnv names the environment variable that makes the process
// SIGKILL itself at a point of a rewrite ("after-temp-write",
// "after-backup", "after-rename"). It exists for the integration test that
// proves a killed agent leaves the old or the new file, never a mix; unset,
// it costs one getenv per write.
const CrashPointEnv = "RCA_TEST_CRASH_POINT"

// testCrashHook, when set by unit tests, is called at each crash point
// instead of the environment check.
var testCrashHook func(point string)

func crashPoint(point string) {
	if testCrashHook != nil {
		testCrashHook(point)
		return
	}
	if os.Getenv(CrashPointEnv) == point {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

// WriteOptions tune WriteAtomic.
type WriteOptions struct {
	// Backup keeps the current file as path+BackupSuffix before replacing
	// it. A rollback writes without it, so the good backup survives.
	Backup bool
	// Check is called with the written and synced temp file before it is
	// renamed into place; an error leaves the real file untouched. The
	// pipeline runs nutcracker --test-conf here.
	Check func(tmp string) error
}

// WriteAtomic replaces path with data so that a reader, or a crash at any
// point, sees either the old or the new content: temp file in the same
// directory, fsync, rename, fsync of the directory. Identical content is not
// written at all (wrote is false). The file keeps its mode and, when the
// agent may set it, its owner.
//
// A symlinked config (a common way to switch configs) stays a symlink: the
// file it points to is replaced, in its own directory.
func WriteAtomic(path string, data []byte, o WriteOptions) (wrote bool, err error) {
	path = resolveLink(path)
	cur, err := os.ReadFile(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if exists && bytes.Equal(cur, data) {
		return false, nil
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	mode := fs.FileMode(0o644)
	var st os.FileInfo
	if exists {
		if st, err = os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	// With a Check, the temp file's fsync runs while the check reads it
	// (from the page cache): a failover waits for the longer of the two,
	// not their sum. Nothing is renamed before both are done.
	tmp, err := writeTemp(dir, base, data, mode, st, o.Check == nil)
	if err != nil {
		return false, err
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmp)
		}
	}()
	if o.Check != nil {
		synced := make(chan error, 1)
		go func() { synced <- syncFile(tmp) }()
		checkErr := o.Check(tmp)
		syncErr := <-synced
		if checkErr != nil {
			return false, checkErr
		}
		if syncErr != nil {
			return false, syncErr
		}
	}
	crashPoint("after-temp-write")
	if o.Backup && exists {
		if err := backup(path, dir, base, cur, mode); err != nil {
			return false, err
		}
		crashPoint("after-backup")
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("replace %s: %w", path, err)
	}
	keep = true
	crashPoint("after-rename")
	if err := syncDir(dir); err != nil {
		return true, err
	}
	return true, nil
}

// writeTemp writes data to a new temp file in dir, synced unless sync is
// false (the caller syncs it with syncFile), and returns its name.
func writeTemp(dir, base string, data []byte, mode fs.FileMode, like os.FileInfo, sync bool) (string, error) {
	f, err := os.CreateTemp(dir, "."+base+tempInfix+"*")
	if err != nil {
		return "", fmt.Errorf("create temp file beside %s: %w", base, err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if like != nil {
		if sys, ok := like.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			_ = f.Chown(int(sys.Uid), int(sys.Gid))
		}
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return name, nil
}

// syncFile flushes a written file to disk.
func syncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return nil
}

// backup makes path+BackupSuffix hold the current content. A hard link costs
// no copy and is atomic; where links are refused, the content is written.
// Either way a crash leaves the old backup or the new one.
func backup(path, dir, base string, cur []byte, mode fs.FileMode) error {
	dst := path + BackupSuffix
	link := filepath.Join(dir, "."+base+tempInfix+"bak")
	os.Remove(link)
	if err := os.Link(path, link); err == nil {
		if err := os.Rename(link, dst); err != nil {
			os.Remove(link)
			return fmt.Errorf("keep backup %s: %w", dst, err)
		}
		return nil
	}
	tmp, err := writeTemp(dir, base, cur, mode, nil, true)
	if err != nil {
		return fmt.Errorf("keep backup %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keep backup %s: %w", dst, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// CleanTemp removes the temp files that an interrupted rewrite of path left
// in its directory. The runner calls it on start.
func CleanTemp(path string) error {
	dir, base := filepath.Split(resolveLink(path))
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clean temp files of %s: %w", path, err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+base+tempInfix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// resolveLink returns the file path finally points to, or path itself when
// it is not a symlink or does not exist yet.
func resolveLink(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return path
}
