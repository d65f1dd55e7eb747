package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// twFullConfig is a one-pool nutcracker config: %[1]s listen, %[2]s the
// shard's master, %[3]s redis_auth.
const twFullConfig = `full:
  listen: %[1]s
  hash: fnv1a_64
  distribution: ketama
  redis: true
  redis_auth: %[3]s
  timeout: 400
  servers:
   - %[2]s:1 shard-full
`

// twUrgentRetry is the runner's UrgentRetry in TestTwemproxyDiskFullFailover.
const twUrgentRetry = 250 * time.Millisecond

// TestTwemproxyDiskFullFailover: the twemproxy config directory is a real
// filesystem that is full (a tmpfs the test mounts) when the shard's master
// is killed. The agent keeps the old file and nutcracker serving, retries at
// the short UrgentRetry interval rather than a backoff growing to 30s, says
// in its status and in the Consul check since when the proxy is wrong, and
// applies the switch within a few retry intervals of the space coming back.
//
// Needs root (mount). On the code before UrgentRetry, the wait for eight
// failed runs times out: the ordinary backoff (500ms doubling to 30s) makes
// seven attempts in no less than about 30s.
func TestTwemproxyDiskFullFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and nutcracker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	nc, err := sandbox.Binary("nutcracker")
	if err != nil {
		t.Fatal(err)
	}
	consul, err := c.StartConsul(sandbox.ConsulOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "shard-full", Replicas: 1, Sentinels: 3, Quorum: 2, Password: twPassword})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := c.ProcessDir("twemproxy-full")
	if err != nil {
		t.Fatal(err)
	}
	confDir := filepath.Join(dir, "conf")
	mountTmpfs(t, confDir, "64k")

	log := &sandbox.SyncBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "agent", Level: hclog.Debug, Output: log, TimeFormat: "15:04:05.000000"})
	metrics := telemetry.Discard()
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	mon, err := discovery.NewMonitor(discovery.MonitorOptions{
		Addresses: sentinels, RedisPassword: twPassword,
		QueryTimeout: 300 * time.Millisecond, ResyncInterval: 500 * time.Millisecond,
		PingInterval: 250 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		Logger: logger.Named(telemetry.LogSentinel), Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := discovery.NewConsulClient(discovery.ConsulOptions{Address: consul.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := discovery.NewRegistrar(discovery.RegistrarOptions{
		Client: client, TTL: 3 * time.Second, ResyncInterval: 500 * time.Millisecond,
		BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
		Logger: logger.Named(telemetry.LogConsul), Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	ip := c.NewIP()
	var ports [2]int
	for i := range ports {
		if ports[i], err = c.FreePort(ip); err != nil {
			t.Fatal(err)
		}
	}
	listen := net.JoinHostPort(ip, strconv.Itoa(ports[0]))
	file := filepath.Join(confDir, "nutcracker.yml")
	orig := fmt.Sprintf(twFullConfig, listen, twServer(shard.Master.Addr()), twPassword)
	if err := os.WriteFile(file, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	ncLog := filepath.Join(dir, "nutcracker.log") // outside the full filesystem
	runner, err := twemproxy.New(twemproxy.Options{
		Name: "full", Node: "tw-full", ConfigFile: file, NutcrackerBin: nc,
		Restart: twemproxy.RestartOptions{
			Mode:    twemproxy.ModeSupervise,
			Command: []string{nc, "-c", file, "-s", strconv.Itoa(ports[1]), "-a", ip, "-o", ncLog},
		},
		Masters: twTruth{mon}, Registry: reg,
		CheckInterval: 250 * time.Millisecond, ProbeTimeout: 5 * time.Second,
		// The ordinary backoff at its defaults (500ms doubling to 30s), as
		// in production; only the emergency interval is shrunk.
		UrgentRetry: twUrgentRetry,
		Logger:      logger, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-registered first: the runner stops (and nutcracker
	// with it) before the tmpfs is unmounted and the cluster stopped.
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(context.Background())
	t.Cleanup(func() {
		stop()
		wg.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", log.Tail(300))
			t.Logf("nutcracker log:\n%s", twTail(ncLog, 30))
		}
	})
	for name, run := range map[string]func(context.Context) error{"monitor": mon.Run, "registrar": reg.Run, "runner": runner.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	serviceID := twemproxy.ServiceID("tw-full", "full")
	check := func(ctx context.Context) (*api.HealthCheck, error) {
		checks, _, err := admin.Health().Checks("twemproxy", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, err
		}
		for _, c := range checks {
			if c.ServiceID == serviceID && c.Type != "alias" {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%s not registered", serviceID)
	}
	waitCheck := func(what string, ok func(*api.HealthCheck) bool) {
		t.Helper()
		if err := sandbox.Poll(ctx, what, func(ctx context.Context) error {
			c, err := check(ctx)
			if err != nil {
				return err
			}
			if !ok(c) {
				return fmt.Errorf("%s: %s", c.Status, c.Output)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitCheck("the pool passing in Consul", func(c *api.HealthCheck) bool { return c.Status == api.HealthPassing })

	// Fill the config directory, then kill the master.
	filler := fillDisk(t, confDir)
	oldAddr := shard.Master.Addr()
	if err := shard.Master.Kill(); err != nil {
		t.Fatal(err)
	}
	var newAddr string
	if err := sandbox.Poll(ctx, "the Monitor to name a new master", func(context.Context) error {
		m := mon.Masters()["shard-full"]
		if !m.Known() || m.Addr == oldAddr {
			return fmt.Errorf("truth %+v", m)
		}
		newAddr = m.Addr
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	learnt := mon.Masters()["shard-full"].Since
	// Eight failed rewrites: at UrgentRetry that is about two seconds; at
	// the old backoff more than the deadline.
	failCtx, failCancel := context.WithTimeout(ctx, 20*time.Second)
	err = sandbox.Poll(failCtx, "eight failed rewrites", func(context.Context) error {
		if st := runner.Status(); st.Failures < 8 {
			return fmt.Errorf("%d failed runs, last error %q", st.Failures, st.LastError)
		}
		return nil
	})
	failCancel()
	if err != nil {
		t.Fatal(err)
	}
	st := runner.Status()
	if !strings.Contains(st.LastError, "no space left on device") {
		t.Errorf("last error %q does not say the disk is full", st.LastError)
	}
	if n := strings.Count(st.LastError, ".rca-tmp-"); n > 1 {
		t.Errorf("last error names the temp file %d times: %q", n, st.LastError)
	}
	if st.WrongSince.IsZero() || st.WrongSince.After(learnt) {
		t.Errorf("wrong since %v, want at or before the truth moved (%v)", st.WrongSince, learnt)
	}
	if b, _ := os.ReadFile(file); string(b) != orig {
		t.Fatalf("the file changed on a full disk:\n%s", b)
	}
	if _, err := twDo(ctx, listen, "PING"); err != nil {
		t.Errorf("the proxy does not serve on a full disk: %v", err)
	}
	waitCheck("the check to say the proxy is wrong and since when", func(c *api.HealthCheck) bool {
		return c.Status == api.HealthWarning && strings.Contains(c.Output, "no space left on device") &&
			strings.Contains(c.Output, "the proxy has been wrong since ")
	})
	outage := runner.Status()
	if c, err := check(ctx); err == nil {
		t.Logf("Consul check on a full disk: %s: %s", c.Status, c.Output)
	}

	// Free the space: the switch follows within a few retry intervals.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	var applied time.Time
	if err := sandbox.Poll(ctx, "the switch applied", func(context.Context) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		st := runner.Status()
		if want := fmt.Sprintf("%x", sha256.Sum256(b)); st.RunningSHA256 != want || st.Pending || st.LastRun == nil || st.LastRun.Result != "ok" {
			return fmt.Errorf("running %.12s, file %.12s, pending %v", st.RunningSHA256, want, st.Pending)
		}
		applied = time.Now()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st = runner.Status()
	want := strings.Replace(orig, twServer(oldAddr)+":1 shard-full", twServer(newAddr)+":1 shard-full", 1)
	if b, _ := os.ReadFile(file); string(b) != want {
		t.Errorf("file after the switch:\n%s\nwant:\n%s", b, want)
	}
	// Applied after the space came back (a run that began up to one
	// interval before may be the one that wrote), by one of the first
	// runs after it, and within a few seconds.
	if st.LastRun.At.Before(freed.Add(-twUrgentRetry)) {
		t.Errorf("the switch was applied by a run that started at %v, before the space came back at %v", st.LastRun.At, freed)
	}
	if runs := st.Runs - outage.Runs; runs > 3 {
		t.Errorf("%d runs after the space came back, want the switch within 3", runs)
	}
	if d := applied.Sub(freed); d > 3*time.Second {
		t.Errorf("switch applied %s after the space came back", d)
	}
	if st.Failures != 0 || !st.WrongSince.IsZero() {
		t.Errorf("after the switch: %d failed runs, wrong since %v", st.Failures, st.WrongSince)
	}
	waitCheck("the pool passing after the switch", func(c *api.HealthCheck) bool { return c.Status == api.HealthPassing })
	if _, err := twDo(ctx, listen, "SET", "tw:full", "after"); err != nil {
		t.Errorf("write through the proxy after the switch: %v", err)
	} else if v, err := getDirect(ctx, newAddr, "tw:full"); v != "after" {
		t.Errorf("the write did not reach the new master %s: %q, %v", newAddr, v, err)
	}
	t.Logf("disk full: %d failed rewrites in %s (retry every ≤%s), proxy wrong for %s; switch applied %s after the space came back, %d runs",
		outage.Failures, freed.Sub(outage.WrongSince).Round(time.Millisecond), twUrgentRetry,
		applied.Sub(outage.WrongSince).Round(time.Millisecond), applied.Sub(freed).Round(time.Millisecond), st.Runs-outage.Runs)
}

// mountTmpfs mounts a tmpfs of size at dir, unmounted when the test ends.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs at %s (needs root): %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fillDisk writes a file in dir until the filesystem says ENOSPC and
// returns its name; removing it frees the space.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for range 1 << 16 {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s: %v, want ENOSPC", dir, err)
	}
	return name
}
