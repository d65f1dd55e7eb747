package twemproxy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// blockedNutcracker is a nutcracker that fails --test-conf while the file
// block exists, as a write fails while a disk is full.
func blockedNutcracker(t *testing.T) (bin, block string) {
	t.Helper()
	dir := t.TempDir()
	block = filepath.Join(dir, "block")
	bin = filepath.Join(dir, "nutcracker")
	script := fmt.Sprintf("#!/bin/sh\nif [ -e %q ]; then echo 'blocked for the test' >&2; exit 1; fi\nexec %q \"$@\"\n", block, nutcrackerBin(t))
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return bin, block
}

// TestRunnerRetriesUrgentlyWhileTheProxyIsWrong: a rewrite that fails before
// the proxy is touched, while the truth has moved a server, is retried every
// UrgentRetry and not at the ordinary backoff (an hour here), the status and
// the check say since when the proxy is wrong, and the switch is applied at
// the first retry after the cause is gone.
func TestRunnerRetriesUrgentlyWhileTheProxyIsWrong(t *testing.T) {
	l1 := freeAddr(t)
	orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 shard-a\n", l1)
	bin, block := blockedNutcracker(t)
	e := newRunnerEnv(t, orig, map[string]string{"shard-a": "127.0.0.1:7001"}, func(o *Options) {
		o.NutcrackerBin = bin
		o.RetryMin, o.RetryMax = time.Hour, time.Hour
		o.UrgentRetry = 20 * time.Millisecond
	})
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("main").Status == consulreg.Passing })

	e.src.set("shard-a", "127.0.0.1:7101")
	learnt := e.src.Masters()["shard-a"].Since
	waitFor(t, 10*time.Second, "five failed runs", func() bool { return e.runner.Status().Failures >= 5 })
	st := e.runner.Status()
	if !st.WrongSince.Equal(learnt) {
		t.Errorf("wrong since %v, want when the truth moved (%v)", st.WrongSince, learnt)
	}
	if got := e.read(); got != orig {
		t.Errorf("file changed:\n%s", got)
	}
	if r, _ := e.proxy.counts(); r != 0 {
		t.Errorf("proxy restarted %d times", r)
	}
	waitFor(t, 5*time.Second, "the check to say since when", func() bool {
		h := e.health("main")
		return h.Status == consulreg.Warning && strings.Contains(h.Output, "the proxy has been wrong since "+learnt.UTC().Format("2006-01-02T15:04:05.000Z")) &&
			strings.Contains(h.Output, "validate failed")
	})
	// The check writes Consul before its findings reach the status.
	waitFor(t, 5*time.Second, "the pool status to say since when", func() bool {
		ps := e.runner.Status().Pools
		return len(ps) == 1 && ps[0].WrongSince.Equal(learnt)
	})
	// Repeated failures are logged at error once per error, not per try
	// (and again every logEvery tries: the retries go on meanwhile, and a
	// failure is logged before the status counts it).
	before := e.runner.Status().Failures
	n := strings.Count(e.logs.String(), "[ERROR] twemproxy: pipeline failed")
	after := e.runner.Status().Failures
	if n < 1+before/logEvery || n > 1+(after+1)/logEvery {
		t.Errorf("%d error lines for one repeated error (%d to %d tries)", n, before, after)
	}

	freed := time.Now()
	if err := os.Remove(block); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the switch applied", func() bool {
		st := e.runner.Status()
		return st.LastRun != nil && st.LastRun.Result == "ok"
	})
	if r, _ := e.proxy.counts(); r != 1 {
		t.Errorf("%d restarts for one switch", r)
	}
	st = e.runner.Status()
	// A run that started before the block went passes if its check ran
	// after (the write, fsync and exec before it take a while on a loaded
	// machine): it started at most a retry plus its duration before.
	if st.LastRun == nil || st.LastRun.Result != "ok" ||
		st.LastRun.At.Before(freed.Add(-e.runner.o.UrgentRetry-time.Duration(st.LastRun.DurationMS*float64(time.Millisecond)))) {
		t.Errorf("last run: %+v (freed at %v)", st.LastRun, freed)
	}
	if st.Failures != 0 || !st.WrongSince.IsZero() {
		t.Errorf("after the switch: %d failures, wrong since %v", st.Failures, st.WrongSince)
	}
	waitFor(t, 5*time.Second, "passing after the switch", func() bool { return e.health("main").Status == consulreg.Passing })
	waitFor(t, 5*time.Second, "the pool status right after the switch", func() bool {
		ps := e.runner.Status().Pools
		return len(ps) == 1 && ps[0].WrongSince.IsZero()
	})
}

// TestRunnerBacksOffWhenARetryCostsARestart: a failure in the restart or
// probe (rolled back) costs a blackout per attempt, so it keeps the
// ordinary backoff although the proxy disagrees with the truth.
func TestRunnerBacksOffWhenARetryCostsARestart(t *testing.T) {
	l1, l2 := freeAddr(t), freeAddr(t)
	e := newRunnerEnv(t, twoPoolConfig(l1, l2), map[string]string{"shard-a": "127.0.0.1:7001", "shard-b": "127.0.0.1:7002"}, func(o *Options) {
		o.ProbeTimeout = 100 * time.Millisecond
		o.RetryMin, o.RetryMax = time.Hour, time.Hour
		o.UrgentRetry = 10 * time.Millisecond
	})
	e.proxy.refuse = "127.0.0.1:7666"
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("alpha").Status == consulreg.Passing })
	e.src.set("shard-a", "127.0.0.1:7666")
	waitFor(t, 5*time.Second, "the rollback", func() bool { return e.runner.Status().Rollbacks == 1 })
	// Twenty health checks later (each one a chance for an urgent retry
	// to have run), still one failure.
	e.reg.mu.Lock()
	from := e.reg.updates
	e.reg.mu.Unlock()
	waitFor(t, 10*time.Second, "twenty checks", func() bool {
		e.reg.mu.Lock()
		defer e.reg.mu.Unlock()
		return e.reg.updates >= from+40 // two pools
	})
	if st := e.runner.Status(); st.Failures != 1 || st.Rollbacks != 1 || st.WrongSince.IsZero() {
		t.Errorf("failures %d, rollbacks %d, wrong since %v; want 1, 1, set", st.Failures, st.Rollbacks, st.WrongSince)
	}
}
