package twemproxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// nutcrackerSetup writes a one-pool config and returns it, the pool and the
// argv that runs nutcracker on it in the foreground.
func nutcrackerSetup(t *testing.T) (file string, pool Pool, argv []string) {
	t.Helper()
	bin := nutcrackerBin(t)
	listen := freeAddr(t)
	_, statsPort, _ := net.SplitHostPort(freeAddr(t))
	file = filepath.Join(t.TempDir(), "nutcracker.yml")
	src := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 shard-a\n", listen)
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	pools, err := Pools([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return file, pools[0], []string{bin, "-c", file, "-s", statsPort, "-a", "127.0.0.1", "-o", "/dev/stderr"}
}

func TestSupervisor(t *testing.T) {
	_, pool, argv := nutcrackerSetup(t)
	sup, err := NewSupervisor(SupervisorOptions{Argv: argv, StopTimeout: 2 * time.Second, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = sup.Stop(ctx) })
	if sup.Exited() != nil || sup.PID() != 0 {
		t.Fatal("child before the first start")
	}
	if err := sup.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := waitPools(ctx, []Pool{pool}, 5*time.Second, sup.Exited()); err != nil {
		t.Fatalf("first start: %v\n%s", err, sup.Output())
	}
	pid := sup.PID()

	var worst time.Duration
	for i := range 5 {
		start := time.Now()
		if err := sup.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		first, _, err := waitPools(ctx, []Pool{pool}, 5*time.Second, sup.Exited())
		if err != nil {
			t.Fatalf("restart %d: %v\n%s", i, err, sup.Output())
		}
		worst = max(worst, first.Sub(start))
	}
	t.Logf("worst restart (SIGTERM to PING answered) of 5: %s", worst)
	if sup.PID() == pid || sup.PID() == 0 {
		t.Errorf("same or no child after restarts")
	}

	// A crash closes the exit channel of that child only.
	exited := sup.Exited()
	if err := syscall.Kill(sup.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("exit channel not closed after SIGKILL")
	}
	if sup.PID() != 0 || sup.ExitError() == nil {
		t.Errorf("after a crash: pid %d, exit error %v", sup.PID(), sup.ExitError())
	}
	if err := sup.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if sup.Exited() == exited {
		t.Error("no fresh exit channel for the new child")
	}
	if _, _, err := waitPools(ctx, []Pool{pool}, 5*time.Second, sup.Exited()); err != nil {
		t.Fatal(err)
	}
	exited = sup.Exited()
	if err := sup.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("Stop returned before the child exited")
	}
	if err := Ping(ctx, pool, 100*time.Millisecond); err == nil {
		t.Error("pool answers after Stop")
	}
}

func TestSupervisorKillsAfterStopTimeout(t *testing.T) {
	sup, err := NewSupervisor(SupervisorOptions{
		Argv:        []string{"/bin/sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`},
		StopTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "child output", func() bool { return strings.Contains(sup.Output(), "ready") })
	start := time.Now()
	if err := sup.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("stop took %s", took)
	}
	if sup.PID() != 0 {
		t.Error("child still running")
	}
}

func TestSupervisorStartFailure(t *testing.T) {
	if _, err := NewSupervisor(SupervisorOptions{Argv: []string{"/nonexistent/nutcracker"}}); err == nil || !strings.Contains(err.Error(), "/nonexistent/nutcracker") {
		t.Errorf("missing binary: %v", err)
	}
	// A binary that goes away later fails the start, not the agent.
	dir := t.TempDir()
	bin := filepath.Join(dir, "nc")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sup, err := NewSupervisor(SupervisorOptions{Argv: []string{bin}})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(bin)
	if err := sup.Restart(context.Background()); err == nil || !strings.Contains(err.Error(), bin) {
		t.Errorf("start of a removed binary: %v", err)
	}
}

func TestCommandRestarter(t *testing.T) {
	ctx := context.Background()
	ok := &CommandRestarter{Argv: []string{"/bin/true"}}
	if err := ok.Restart(ctx); err != nil {
		t.Errorf("true: %v", err)
	}
	bad := &CommandRestarter{Argv: []string{"/bin/sh", "-c", "echo no such unit >&2; exit 5"}}
	if err := bad.Restart(ctx); err == nil || !strings.Contains(err.Error(), "exit status 5") || !strings.Contains(err.Error(), "no such unit") {
		t.Errorf("failing command: %v", err)
	}
	// The timeout kills the whole group, grandchildren included.
	slow := &CommandRestarter{Argv: []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}, Timeout: 100 * time.Millisecond}
	start := time.Now()
	if err := slow.Restart(ctx); err == nil || !strings.Contains(err.Error(), "no exit after 100ms") {
		t.Errorf("slow command: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("timeout took %s", took)
	}
	if err := (&CommandRestarter{}).Restart(ctx); err == nil {
		t.Error("empty argv accepted")
	}
}

// TestRunnerSupervisesNutcracker runs the whole pipeline against a real
// nutcracker child: start, rewrite and restart, crash and restart, stop.
func TestRunnerSupervisesNutcracker(t *testing.T) {
	file, pool, argv := nutcrackerSetup(t)
	src := newFakeSource(map[string]string{"shard-a": "127.0.0.1:7001"})
	reg := newFakeRegistry()
	logs := &syncBuffer{}
	r, err := New(Options{
		Name: "main", Node: "n1", ConfigFile: file, NutcrackerBin: argv[0],
		Restart: RestartOptions{Mode: ModeSupervise, Command: argv, StopTimeout: 2 * time.Second},
		Masters: src, Registry: reg, Metrics: telemetry.Discard(),
		CheckInterval: 20 * time.Millisecond, RetryMin: 20 * time.Millisecond,
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	id := ServiceID("n1", "main")
	passing := func() bool { _, h, _ := reg.get(id); return h.Status == consulreg.Passing }
	waitFor(t, 5*time.Second, "nutcracker started and passing", passing)
	st := r.Status()
	if st.PID == 0 || st.LastRestart == nil || st.LastRestart.Reason != "start" {
		t.Fatalf("status after start: %+v", st)
	}

	src.set("shard-a", "127.0.0.1:7101")
	waitFor(t, 5*time.Second, "rewrite applied", func() bool {
		st := r.Status()
		return st.LastRestart != nil && st.LastRestart.Reason == "rewrite" && st.LastRestart.Result == "ok"
	})
	st = r.Status()
	t.Logf("rewrite: restart %.2fms, blackout %.2fms, run %.2fms", st.LastRestart.DurationMS, st.LastRestart.BlackoutMS, st.LastRun.DurationMS)
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), "127.0.0.1:7101:1 shard-a") {
		t.Fatalf("file: %s", b)
	}

	pid := st.PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "restart after the crash", func() bool {
		st := r.Status()
		return st.PID != 0 && st.PID != pid && Ping(context.Background(), pool, 100*time.Millisecond) == nil
	})
	if !strings.Contains(logs.String(), "nutcracker exited; restarting") {
		t.Error("the crash was not logged")
	}
	waitFor(t, 5*time.Second, "the crash restart in the status", func() bool {
		lr := r.Status().LastRestart
		return lr != nil && lr.Reason == "crash" && lr.Result == "ok"
	})
	pid = r.Status().PID

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if err := syscall.Kill(pid, 0); err == nil {
		// Reaped by cmd.Wait in Stop, so the PID is gone.
		t.Errorf("nutcracker %d still exists after shutdown", pid)
	}
	if _, _, ok := reg.get(id); ok {
		t.Error("pool still registered after shutdown")
	}
}
