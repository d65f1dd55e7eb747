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

// WriteOptions tune WriteAtomic.
type WriteOptions struct {
	// Backup keeps the current file as path+BackupSuffix before replacing
	// it. A rollback writes without it, so the good backup survives.
	Backup bool
	// Check is called with the written and synced temp file before it is
	// renamed into place; an error leaves the real file untouched. The
	// pipeline runs nutcracker --test-conf here.
	Check func(tmp string) error
	// Staged is a temp file beside path (named by StageTemp) that already
	// holds data, synced and checked: it is renamed into place without
	// writing or checking again. The caller vouches that it holds data.
	Staged string
	// CrashPoint, when set, is called at each step after which a crash
	// must leave the old or the new file: "after-temp-write",
	// "after-backup", "after-rename". Tests kill the process there to
	// prove it; nil in the agent.
	CrashPoint func(step string)
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
	crashPoint := func(step string) {
		if o.CrashPoint != nil {
			o.CrashPoint(step)
		}
	}
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
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp := o.Staged
	if tmp == "" {
		if tmp, err = StageTemp(path, data, o.Check); err != nil {
			return false, err
		}
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmp)
		}
	}()
	crashPoint("after-temp-write")
	if o.Backup && exists {
		if err := backup(path, dir, base, cur, mode); err != nil {
			return false, err
		}
		crashPoint("after-backup")
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, pathError("replace", path, err)
	}
	keep = true
	crashPoint("after-rename")
	if err := syncDir(dir); err != nil {
		return true, err
	}
	return true, nil
}

// StageTemp writes data to a new temp file beside path, with path's mode
// and owner, synced and, when check is not nil, checked, and returns its
// name: the file WriteAtomic renames into place. On error nothing is left.
//
// With a check, the fsync runs while the check reads the file (from the
// page cache): a failover waits for the longer of the two, not their sum.
func StageTemp(path string, data []byte, check func(tmp string) error) (string, error) {
	path = resolveLink(path)
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	mode := fs.FileMode(0o644)
	st, err := os.Stat(path)
	if err == nil {
		mode = st.Mode().Perm()
	} else {
		st = nil
	}
	tmp, err := writeTemp(dir, base, data, mode, st, check == nil)
	if err != nil {
		return "", err
	}
	if check == nil {
		return tmp, nil
	}
	synced := make(chan error, 1)
	go func() { synced <- syncFile(tmp) }()
	checkErr := check(tmp)
	syncErr := <-synced
	if err := errors.Join(checkErr, syncErr); err != nil {
		os.Remove(tmp)
		if checkErr != nil {
			return "", checkErr
		}
		return "", syncErr
	}
	return tmp, nil
}

// writeTemp writes data to a new temp file in dir, synced unless sync is
// false (the caller syncs it with syncFile), and returns its name.
func writeTemp(dir, base string, data []byte, mode fs.FileMode, like os.FileInfo, sync bool) (string, error) {
	f, err := os.CreateTemp(dir, "."+base+tempInfix+"*")
	if err != nil {
		return "", pathError("create a temp file in", dir, err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", pathError("write", name, err)
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
		return "", pathError("write", name, err)
	}
	return name, nil
}

// pathError says what was being done to which file, once: the *fs.PathError
// of a failed call names the file already, so its path and operation are
// replaced rather than repeated ("write X: write X: no space left on
// device"). errors.Is still sees the errno.
func pathError(op, name string, err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &le):
		err = le.Err
	}
	return fmt.Errorf("%s %s: %w", op, name, err)
}

// syncFile flushes a written file to disk.
func syncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return pathError("open", name, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return pathError("sync", name, err)
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
			return pathError("keep backup", dst, err)
		}
		return nil
	}
	tmp, err := writeTemp(dir, base, cur, mode, nil, true)
	if err != nil {
		return fmt.Errorf("keep backup %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return pathError("keep backup", dst, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return pathError("open", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return pathError("sync", dir, err)
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
