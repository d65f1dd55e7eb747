package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProcessLifecycle(t *testing.T) {
	c := newTestCluster(t)
	p, err := c.StartProcess("sleeper", []string{"sh", "-c", "echo started; exec sleep 300"}, []string{"X=1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := p.Exited()
	if !p.Alive() {
		t.Fatal("not alive after start")
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil { // Stop must get a paused process out too
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first:
	default:
		t.Fatal("Exited not closed after Stop")
	}
	if p.Alive() || p.ExitErr() == nil {
		t.Fatalf("after Stop: alive=%v exitErr=%v", p.Alive(), p.ExitErr())
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if p.Exited() == first || !p.Alive() {
		t.Fatal("Restart did not give a fresh running process")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Fatal("alive after Kill")
	}
	if err := p.Kill(); err != nil { // killing a dead process is fine
		t.Fatal(err)
	}
	if _, err := c.StartProcess("sleeper", []string{"true"}, nil, nil); err == nil {
		t.Fatal("duplicate name accepted")
	}
	var b strings.Builder
	c.DumpLogs(&b)
	if !strings.Contains(b.String(), "==> sleeper") || strings.Count(b.String(), ": start ") != 2 {
		t.Fatalf("DumpLogs:\n%s", b.String())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartProcess("late", []string{"true"}, nil, nil); err == nil {
		t.Fatal("start after Close accepted")
	}
}

func TestStartFailsWithLog(t *testing.T) {
	c := newTestCluster(t)
	never := func(context.Context) error { return os.ErrNotExist }
	_, err := c.StartProcess("crasher", []string{"sh", "-c", "echo boom >&2; exit 3"}, nil, never)
	if err == nil || !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
}

func TestCloseKillsProcessGroup(t *testing.T) {
	c := newTestCluster(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The shell leaves a grandchild behind in its process group.
	p, err := c.StartProcess("parent", []string{"sh", "-c", "sleep 300 & echo $! > " + pidFile + "; wait"}, nil,
		func(context.Context) error {
			if b, err := os.ReadFile(pidFile); err != nil || !strings.HasSuffix(string(b), "\n") {
				return fmt.Errorf("no pid yet: %v", err)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Fatal("parent alive after Close")
	}
	b, _ := os.ReadFile(pidFile)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The group got SIGKILL; the grandchild is not ours to wait for, so poll
	// until it is gone or a zombie waiting for PID 1 (state Z).
	err = Poll(ctx, "grandchild to die", func(context.Context) error {
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
		if err == nil && !strings.Contains(string(stat), ") Z ") {
			return fmt.Errorf("alive: %s", stat)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBinaryMissing(t *testing.T) {
	if _, err := Binary("no-such-binary-rca"); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("err = %v, want a hint to run make deps", err)
	}
	t.Setenv("RCA_CONSUL_BIN", "/nonexistent/consul")
	if _, err := Binary("consul"); err == nil || !strings.Contains(err.Error(), "RCA_CONSUL_BIN") {
		t.Fatalf("err = %v, want it to name RCA_CONSUL_BIN", err)
	}
}

func TestAllocatorNeverRepeats(t *testing.T) {
	ips := map[string]bool{}
	for range 600 {
		ip := allocIP()
		if ips[ip] || !strings.HasPrefix(ip, "127.0.") || ip == "127.0.0.1" {
			t.Fatalf("bad or repeated IP %s", ip)
		}
		ips[ip] = true
	}
	ip := allocIP()
	seen := map[int]bool{}
	for range 50 {
		port, err := allocPort(ip)
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] || !portFree(ip, port, true) {
			t.Fatalf("port %d repeated or busy", port)
		}
		seen[port] = true
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("cannot bind %s: %v", ip, err)
	}
	l.Close()
}

// newTestCluster is a Cluster for one test without the binary check, for tests that run only
// shell tools.
func newTestCluster(t *testing.T) *Cluster {
	c, err := New(Options{Dir: t.TempDir(), StartTimeout: 5 * time.Second, StopTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			c.DumpLogs(&b)
			t.Log(b.String())
		}
		_ = c.Close()
	})
	return c
}
