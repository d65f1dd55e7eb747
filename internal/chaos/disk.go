package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// mountTmpfs mounts a 1 MiB tmpfs on dir (root only): the proxy's config
// directory, which the DiskFull fault fills.
func mountTmpfs(dir string) error {
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount a tmpfs on %s for the %s fault (needs root): %v: %s", dir, DiskFull, err, out)
	}
	return nil
}

// unmountTmpfs unmounts what mountTmpfs mounted.
func unmountTmpfs(dir string) error {
	var err error
	for range 20 { // a child that has just died may still hold the directory
		var out []byte
		if out, err = exec.Command("umount", dir).CombinedOutput(); err == nil {
			return nil
		}
		err = fmt.Errorf("umount %s: %v: %s", dir, err, out)
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// fillDisk fills the proxy's config directory until a write fails with
// ENOSPC, and frees it when the fault heals: a rewrite in between must fail
// cleanly and be retried once there is room.
func (cp *campaign) fillDisk() (*active, error) {
	if cp.st.mounted == "" {
		return nil, errors.New("no tmpfs mounted")
	}
	if cp.inj.held("disk") {
		return nil, errors.New("the disk is already full")
	}
	path := filepath.Join(cp.st.mounted, ".chaos-filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 32<<10)
	for {
		if _, err = f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		os.Remove(path)
		return nil, fmt.Errorf("fill %s: %w", cp.st.mounted, err)
	}
	cp.tally(DiskFull)
	cp.say("fault %s: %s is full", DiskFull, cp.st.mounted)
	return &active{kind: DiskFull, holds: []string{"disk"}, until: time.Now().Add(cp.dur(time.Second, 6*time.Second)), heal: func() {
		os.Remove(path)
		cp.say("heal: %s has room again", cp.st.mounted)
	}}, nil
}
