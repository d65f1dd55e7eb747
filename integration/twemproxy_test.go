package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// The helpers of this file start with "tw" so that they cannot clash with
// the other integration tests of the package.

// twPassword is requirepass on every Redis, auth-pass on the Sentinels and
// redis_auth of both twemproxy pools.
const twPassword = "tw-s3cret"

// twRules is the least-privilege Consul policy of the twemproxy runner.
const twRules = `service "twemproxy" { policy = "write" }`

// twConfigText is the operator's file: comments everywhere, weights,
// hash_tag, redis_auth, timeouts, a quoted entry. Every byte of it but the
// moved addresses must survive a rewrite.
const twConfigText = `# twemproxy in front of two Sentinel-managed shards.
# Maintained by hand; redis-consul-agent only moves master addresses.
alpha:                          # sharded cache
  listen: %[1]s
  hash: fnv1a_64
  hash_tag: "{}"
  distribution: ketama
  auto_eject_hosts: false
  redis: true
  redis_auth: %[5]s
  timeout: 1000                 # ms
  server_retry_timeout: 200
  server_failure_limit: 1
  servers:
   # shard A carries twice the keys
   - %[3]s:2 shard-a   # weight 2
   - %[4]s:1 shard-b
beta:
  listen: %[2]s
  hash: murmur
  distribution: modula
  redis: true
  redis_auth: %[5]s
  preconnect: true
  servers:
   - '%[4]s:1 shard-b'
`

// twTemplateText is the template runner's config; its hash comes from the
// environment so the test can break it the way an operator would.
const twTemplateText = `# rendered by the template runner
edge:
  listen: %s
  hash: {{ env "TW_HASH" }}
  distribution: ketama
  redis: true
  redis_auth: %s
  servers:
{{- range masterNames }}
   - {{ server . 1 }}
{{- end }}
`

// TestTwemproxyFailover runs the twemproxy pipeline in-process (discovery
// Monitor for the truth, discovery Registrar for Consul) against two real
// Sentinel-watched shards, a real Consul with ACLs and real nutcracker
// children, and walks through the twemproxy faults one step at a time.
func TestTwemproxyFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and nutcracker")
	}
	e := newTwEnv(t)
	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"kill-master", e.testKillMaster},
		{"sentinels-paused-during-failover", e.testSentinelsPaused},
		{"sentinel-links-cut-during-failover", e.testLinksCut},
		{"burst", e.testBurst},
		{"rejected-config", e.testRejected},
		{"nutcracker-dies", e.testNutcrackerDies},
		{"agent-killed-mid-write", e.testAgentKilledMidWrite},
		{"render", e.testRender},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			return
		}
	}
	t.Logf("figures:\n  %s", strings.Join(e.figures, "\n  "))
}

type twEnv struct {
	t       *testing.T
	ctx     context.Context
	c       *sandbox.Cluster
	consul  *sandbox.Consul
	admin   *api.Client
	shards  map[string]*sandbox.Shard
	monitor *discovery.Monitor
	reg     *discovery.Registrar
	journal *telemetry.Journal
	metrics *telemetry.Metrics
	log     *sandbox.SyncBuffer
	nc      string // nutcracker binary
	main    *twProxy
	tmpl    *twProxy
	cuts    []*sandbox.Link
	figures []string
	runWG   sync.WaitGroup
}

// twProxy is one nutcracker supervised by one Runner.
type twProxy struct {
	name   string
	file   string
	listen map[string]string // pool -> host:port
	runner *twemproxy.Runner
}

func newTwEnv(t *testing.T) *twEnv {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	c := harness.ForTest(t, sandbox.Options{})
	nc, err := sandbox.Binary("nutcracker")
	if err != nil {
		t.Fatal(err)
	}
	consul, err := c.StartConsul(sandbox.ConsulOptions{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.StartShard(sandbox.ShardOptions{Name: "shard-a", Replicas: 1, Sentinels: 3, Quorum: 2, Password: twPassword})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.StartShard(sandbox.ShardOptions{Name: "shard-b", Replicas: 1, Use: a.Sentinels, Quorum: 2, Password: twPassword})
	if err != nil {
		t.Fatal(err)
	}
	token, err := consul.CreateToken(ctx, twRules)
	if err != nil {
		t.Fatal(err)
	}
	client, err := discovery.NewConsulClient(discovery.ConsulOptions{Address: consul.HTTPAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	e := &twEnv{
		t: t, ctx: ctx, c: c, consul: consul, admin: admin, nc: nc,
		shards:  map[string]*sandbox.Shard{"shard-a": a, "shard-b": b},
		journal: telemetry.NewJournal(500), metrics: telemetry.Discard(), log: &sandbox.SyncBuffer{},
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "agent", Level: hclog.Debug, Output: e.log, TimeFormat: "15:04:05.000000"})
	// The Monitor reaches the Sentinels through forwarders that the test
	// can cut, as a network partition would.
	var sentinels []string
	for _, s := range a.Sentinels {
		f, err := c.NewLink(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		e.cuts = append(e.cuts, f)
		sentinels = append(sentinels, f.Addr())
	}
	e.monitor, err = discovery.NewMonitor(discovery.MonitorOptions{
		Addresses: sentinels, RedisPassword: twPassword,
		QueryTimeout: 300 * time.Millisecond, ResyncInterval: 500 * time.Millisecond,
		PingInterval: 250 * time.Millisecond, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		FollowPromotion: true, // as the agent does by default
		Logger:          logger.Named(telemetry.LogSentinel), Metrics: e.metrics, Journal: e.journal,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.reg, err = discovery.NewRegistrar(discovery.RegistrarOptions{
		Client: client, TTL: 3 * time.Second, ResyncInterval: 500 * time.Millisecond,
		BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
		Logger: logger.Named(telemetry.LogConsul), Metrics: e.metrics, Journal: e.journal,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	t.Cleanup(func() {
		stop()
		e.runWG.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", e.log.Tail(400))
			for _, p := range []*twProxy{e.main, e.tmpl} {
				if p != nil {
					t.Logf("%s log:\n%s", p.name, twTail(filepath.Join(filepath.Dir(p.file), "nutcracker.log"), 40))
				}
			}
		}
	})
	e.run(runCtx, "monitor", e.monitor.Run)
	e.run(runCtx, "registrar", e.reg.Run)
	if err := sandbox.Poll(ctx, "the Monitor's truth for both shards", func(context.Context) error {
		m := e.monitor.Masters()
		if !m["shard-a"].Known() || !m["shard-b"].Known() {
			return fmt.Errorf("truth %v", m)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The main proxy edits the operator's file in place.
	e.main = e.newProxy("main", func(dir string, listen []string) twemproxy.Options {
		orig := fmt.Sprintf(twConfigText, listen[0], listen[1], a.Master.Addr(), b.Master.Addr(), twPassword)
		file := filepath.Join(dir, "nutcracker.yml")
		if err := os.WriteFile(file, []byte(orig), 0o644); err != nil {
			t.Fatal(err)
		}
		return twemproxy.Options{ConfigFile: file}
	}, "alpha", "beta")
	// The template runner renders its file.
	t.Setenv("TW_HASH", "fnv1a_64")
	e.tmpl = e.newProxy("tmpl", func(dir string, listen []string) twemproxy.Options {
		return twemproxy.Options{
			ConfigFile:   filepath.Join(dir, "nutcracker.yml"),
			TemplateText: fmt.Sprintf(twTemplateText, listen[0], twPassword),
		}
	}, "edge")
	for _, p := range []*twProxy{e.main, e.tmpl} {
		e.waitHealth(t, p, consulreg.Passing, 30*time.Second)
	}
	t.Logf("environment ready in %s", time.Since(start).Round(time.Millisecond))
	return e
}

func (e *twEnv) run(ctx context.Context, name string, f func(context.Context) error) {
	e.runWG.Add(1)
	go func() {
		defer e.runWG.Done()
		if err := f(ctx); err != nil {
			e.t.Errorf("%s: %v", name, err)
		}
	}()
}

// newProxy allocates listen addresses for pools, lets setup write the file,
// and runs a supervising Runner until the test ends.
func (e *twEnv) newProxy(name string, setup func(dir string, listen []string) twemproxy.Options, pools ...string) *twProxy {
	t := e.t
	dir, err := e.c.ProcessDir("twemproxy-" + name)
	if err != nil {
		t.Fatal(err)
	}
	ip := e.c.NewIP()
	p := &twProxy{name: name, listen: map[string]string{}}
	var listen []string
	for _, pool := range pools {
		port, err := e.c.FreePort(ip)
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		p.listen[pool] = addr
		listen = append(listen, addr)
	}
	stats, err := e.c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	o := setup(dir, listen)
	p.file = o.ConfigFile
	o.Name, o.Node, o.NutcrackerBin = name, "tw-node", e.nc
	o.Restart = twemproxy.RestartOptions{
		Mode:        twemproxy.ModeSupervise,
		Command:     []string{e.nc, "-c", o.ConfigFile, "-s", strconv.Itoa(stats), "-a", ip, "-o", filepath.Join(dir, "nutcracker.log")},
		StopTimeout: 5 * time.Second,
	}
	o.Masters, o.Registry = twTruth{e.monitor}, e.reg
	o.CheckInterval, o.ProbeTimeout = 250*time.Millisecond, 5*time.Second
	o.RetryMin, o.RetryMax = 100*time.Millisecond, time.Second
	o.Logger = hclog.New(&hclog.LoggerOptions{Name: "agent", Level: hclog.Debug, Output: e.log, TimeFormat: "15:04:05.000000"})
	o.Metrics, o.Journal = e.metrics, e.journal
	if p.runner, err = twemproxy.New(o); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	e.run(ctx, "runner "+name, p.runner.Run)
	t.Cleanup(stop)
	return p
}

// twTruth adapts the discovery Monitor to the runner. A truth that cannot
// be acted on is passed as Stale, never dropped: the runner then keeps the
// addresses it has.
type twTruth struct{ m *discovery.Monitor }

func (a twTruth) Masters() map[string]twemproxy.Master {
	out := map[string]twemproxy.Master{}
	for name, m := range a.m.Masters() {
		out[name] = twemproxy.Master{Addr: m.Addr, Since: m.Since, Stale: !m.Known()}
	}
	return out
}

func (a twTruth) Subscribe() (<-chan struct{}, func()) { return a.m.Subscribe() }

// waitHealth waits until every pool of p has status in Consul.
func (e *twEnv) waitHealth(t *testing.T, p *twProxy, status string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, timeout)
	defer cancel()
	err := sandbox.Poll(ctx, p.name+" pools "+status+" in Consul", func(ctx context.Context) error {
		checks, _, err := e.admin.Health().Checks("twemproxy", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		for pool := range p.listen {
			id := twemproxy.ServiceID("tw-node", pool)
			found := false
			for _, c := range checks {
				if c.ServiceID == id && c.Type != "alias" { // the status check, not the agent's heartbeat
					found = true
					if c.Status != status {
						return fmt.Errorf("%s is %s: %s", id, c.Status, c.Output)
					}
				}
			}
			if !found {
				return fmt.Errorf("%s not registered", id)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// twDo sends AUTH and one command over a fresh connection to a pool and
// returns the command's reply line. twemproxy refuses go-redis's HELLO.
func twDo(ctx context.Context, addr string, args ...string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var buf []byte
	for _, cmd := range [][]string{{"AUTH", twPassword}, args} {
		buf = fmt.Appendf(buf, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			buf = fmt.Appendf(buf, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := conn.Write(buf); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	var reply string
	for i := range 2 {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, "-") {
			return "", errors.New(line)
		}
		if strings.HasPrefix(line, "$") && line != "$-1" {
			if line, err = r.ReadString('\n'); err != nil {
				return "", err
			}
			line = strings.TrimRight(line, "\r\n")
		}
		if i == 1 {
			reply = line
		}
	}
	return reply, nil
}

// getDirect reads key from a Redis node, bypassing twemproxy.
func getDirect(ctx context.Context, addr, key string) (string, error) {
	c := sandbox.NewClient(addr, twPassword)
	defer c.Close()
	return c.Get(ctx, key).Result()
}

// keyFor finds a key that pool routes to the master of shard.
func (e *twEnv) keyFor(t *testing.T, pool, shard string) string {
	t.Helper()
	master := e.truth(shard)
	for i := range 500 {
		key := fmt.Sprintf("tw:{%d}", i)
		ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
		_, err := twDo(ctx, e.main.listen[pool], "SET", key, "probe")
		if err == nil {
			if v, _ := getDirect(ctx, master, key); v == "probe" {
				cancel()
				return key
			}
		}
		cancel()
	}
	t.Fatalf("no key of pool %s lands on %s (%s)", pool, shard, master)
	return ""
}

// truth is the Monitor's current master of a shard.
func (e *twEnv) truth(shard string) string {
	return e.monitor.Masters()[shard].Addr
}

// twWatch dials a listener every 200µs and records the windows in which it
// refused connections: the restart blackout as a client sees it.
type twWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	windows []time.Duration
}

func watchListener(addr string) *twWatch {
	w := &twWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var down time.Time
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond)
			now := time.Now()
			if err != nil {
				if down.IsZero() {
					down = now
				}
			} else {
				c.Close()
				if !down.IsZero() {
					w.mu.Lock()
					w.windows = append(w.windows, now.Sub(down))
					w.mu.Unlock()
					down = time.Time{}
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	return w
}

// finish stops the watch and returns the refusal windows.
func (w *twWatch) finish() []time.Duration {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.windows
}

func (e *twEnv) read(t *testing.T, p *twProxy) string {
	t.Helper()
	b, err := os.ReadFile(p.file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// twServer is a server entry as the config writes it.
func twServer(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return host + ":" + port
}

// (1) kill -9 the master of shard-a: writes through twemproxy reach the new
// master, and the file differs only in that server's address.
func (e *twEnv) testKillMaster(t *testing.T) {
	ctx := e.ctx
	shard := e.shards["shard-a"]
	before := e.read(t, e.main)
	oldAddr := e.truth("shard-a")
	key := e.keyFor(t, "alpha", "shard-a")
	restarts := e.main.runner.Status().Restarts
	watch := watchListener(e.main.listen["alpha"])

	if err := shard.Node(oldAddr).Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	landed, newAddr := e.writeUntilLanded(t, "alpha", key, "shard-a", oldAddr, 60*time.Second)
	windows := watch.finish()
	// A write can land before the runner has finished its run (probes,
	// bookkeeping): wait for that before reading its counters.
	e.waitApplied(t, e.main)

	want := strings.Replace(before, twServer(oldAddr)+":2 shard-a", twServer(newAddr)+":2 shard-a", 1)
	if got := e.read(t, e.main); got != want {
		t.Fatalf("the file changed more than the address of shard-a:\n--- got\n%s\n--- want\n%s", got, want)
	}
	if b, _ := os.ReadFile(e.main.file + twemproxy.BackupSuffix); string(b) != before {
		t.Errorf("backup is not the previous file")
	}
	st := e.main.runner.Status()
	if st.Restarts != restarts+1 {
		t.Errorf("%d restarts for one failover", st.Restarts-restarts)
	}
	since := e.monitor.Masters()["shard-a"].Since
	e.figure(t, "kill -9 master: failover %s after the kill; +switch-master -> first write on the new master %s; restart %.2fms, blackout seen by a client %s (runner %.2fms)",
		since.Sub(killed).Round(time.Millisecond), landed.Sub(since).Round(100*time.Microsecond),
		st.LastRestart.DurationMS, twMax(windows), st.LastRestart.BlackoutMS)
	for _, f := range e.journal.Failovers() {
		if f.Master == "shard-a" && f.To == newAddr && !f.TwemproxyAt.IsZero() {
			e.figure(t, "journal: shard-a learnt -> twemproxy applied %s", f.TwemproxyAt.Sub(f.At).Round(100*time.Microsecond))
		}
	}
	if err := sandbox.Poll(ctx, "reaction time recorded", func(context.Context) error {
		if twHistogramCount(e.metrics.Reaction.WithLabelValues("twemproxy")) == 0 {
			return errors.New("no observation")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	e.waitHealth(t, e.main, consulreg.Passing, 10*time.Second)
	srv, err := e.consul.LookupSRV(ctx, "twemproxy.service.consul")
	if err != nil {
		t.Fatal(err)
	}
	var ports []int
	for _, s := range srv {
		ports = append(ports, int(s.Port))
	}
	for pool, addr := range e.main.listen {
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if !slices.Contains(ports, port) {
			t.Errorf("SRV twemproxy.service.consul lacks pool %s port %d: %v", pool, port, ports)
		}
	}

	// Bring the old master back once every Sentinel names the new one;
	// Sentinel makes it a replica, so later failovers have one to promote.
	if err := sandbox.Poll(ctx, "every Sentinel to name "+newAddr, func(ctx context.Context) error {
		for _, s := range shard.Sentinels {
			if a, err := s.MasterAddr(ctx, "shard-a"); err != nil || a != newAddr {
				return fmt.Errorf("%s names %s (%v)", s.Name(), a, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := shard.Node(oldAddr).Restart(); err != nil {
		t.Fatal(err)
	}
	e.settle(t, shard)
}

// settle waits until shard has one master that the Sentinels agree on and
// a linked replica, and the main file names that master.
func (e *twEnv) settle(t *testing.T, shard *sandbox.Shard) {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 90*time.Second)
	defer cancel()
	var master string
	var okSince time.Time
	if err := sandbox.Poll(ctx, shard.Name+" to settle", func(ctx context.Context) error {
		if err := e.settled(ctx, shard, &master); err != nil {
			okSince = time.Time{}
			return err
		}
		// Sentinel reconfigures replicas in steps; want a quiet second.
		if okSince.IsZero() {
			okSince = time.Now()
		}
		if time.Since(okSince) < time.Second {
			return errors.New("settled only just now")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.waitServer(t, shard.Name, master)
	e.waitApplied(t, e.main)
}

// settled reports whether shard has one master the Sentinels agree on and
// every other node is its linked replica.
func (e *twEnv) settled(ctx context.Context, shard *sandbox.Shard, master *string) error {
	m, err := shard.CurrentMaster(ctx)
	if err != nil {
		return err
	}
	for _, n := range shard.Nodes() {
		info, err := n.Info(ctx, "replication")
		if err != nil {
			return err
		}
		switch {
		case n.Addr() == m && info["role"] != "master":
			return fmt.Errorf("%s is named master but is %s", m, info["role"])
		case n.Addr() != m && (info["role"] != "slave" || info["master_link_status"] != "up"):
			return fmt.Errorf("%s: role %s, link %s", n.Addr(), info["role"], info["master_link_status"])
		}
	}
	*master = m
	return nil
}

// waitApplied waits until p's proxy runs the file on disk: the rewrite and
// its restart are both done.
func (e *twEnv) waitApplied(t *testing.T, p *twProxy) {
	t.Helper()
	err := sandbox.Poll(e.ctx, p.name+" to run its file", func(context.Context) error {
		b, err := os.ReadFile(p.file)
		if err != nil {
			return err
		}
		st := p.runner.Status()
		if want := fmt.Sprintf("%x", sha256.Sum256(b)); st.RunningSHA256 != want || st.Pending {
			return fmt.Errorf("running %.12s, file %.12s, pending %v", st.RunningSHA256, want, st.Pending)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// failoverAndWait asks for a failover of shard and waits for the Sentinels
// to name a new master, asking again (another Sentinel) when Sentinel gave
// up, as it sometimes does right after a reconfiguration
// (-failover-abort-slave-timeout).
func (e *twEnv) failoverAndWait(t *testing.T, shard *sandbox.Shard, oldAddr string) string {
	t.Helper()
	for attempt := range 3 {
		if err := shard.AskFailover(e.ctx, attempt%len(shard.Sentinels)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
		addr, err := shard.WaitFailover(ctx, oldAddr)
		cancel()
		if err == nil {
			return addr
		}
		t.Logf("failover of %s not done, asking again: %v", shard.Name, err)
	}
	t.Fatalf("no failover of %s after 3 requests", shard.Name)
	return ""
}

// writeUntilLanded writes key through pool every millisecond until the
// value is on the shard's new master (once the Monitor names one other
// than oldAddr), and returns when that first happened.
func (e *twEnv) writeUntilLanded(t *testing.T, pool, key, shard, oldAddr string, timeout time.Duration) (time.Time, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i := 0; time.Now().Before(deadline); i++ {
		val := strconv.Itoa(i)
		ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
		_, err := twDo(ctx, e.main.listen[pool], "SET", key, val)
		at := time.Now()
		cancel()
		if newAddr := e.truth(shard); err == nil && newAddr != oldAddr {
			gctx, gcancel := context.WithTimeout(e.ctx, time.Second)
			v, _ := getDirect(gctx, newAddr, key)
			gcancel()
			if v == val {
				return at, newAddr
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no write through %s reached a new master of %s within %s", pool, shard, timeout)
	return time.Time{}, ""
}

// (2) every Sentinel is frozen (SIGSTOP) in the middle of a failover, after
// the replica was promoted but before +switch-master, for less than
// Sentinel's 2s TILT trigger (a longer freeze makes Sentinel abort the
// failover and demote the replica again: nothing to apply). The agent's
// links go silent; the switch is applied once the Sentinels come back.
func (e *twEnv) testSentinelsPaused(t *testing.T) {
	ctx := e.ctx
	shard := e.shards["shard-b"]
	e.settle(t, shard)
	oldAddr := e.truth("shard-b")
	replica := e.replicaOf(t, shard, oldAddr)
	if err := shard.AskFailover(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Poll(ctx, replica.Name()+" promoted", func(ctx context.Context) error {
		role, err := replica.Role(ctx)
		if err != nil || role != "master" {
			return fmt.Errorf("role %q, %v", role, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range shard.Sentinels {
		if err := s.Pause(); err != nil {
			t.Fatal(err)
		}
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			for _, s := range shard.Sentinels {
				_ = s.Resume()
			}
		}
	}
	defer resume()
	time.Sleep(1200 * time.Millisecond) // the frozen period is the scenario, not a wait
	early := e.truth("shard-b") != oldAddr
	resume()
	resumedAt := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	newAddr, err := shard.WaitFailover(wctx, oldAddr)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if newAddr != replica.Addr() {
		t.Fatalf("Sentinel promoted %s, not %s", newAddr, replica.Addr())
	}
	e.waitServer(t, "shard-b", newAddr)
	if early {
		t.Log("the switch was published before the freeze; the resume path was not exercised")
	}
	e.figure(t, "Sentinels frozen mid-failover for 1.2s: applied %s after they resumed", time.Since(resumedAt).Round(time.Millisecond))
	e.waitHealth(t, e.main, consulreg.Passing, 10*time.Second)
	e.keyFor(t, "beta", "shard-b")
}

// (2b) the agent's links to every Sentinel are cut while a whole failover
// happens: the truth goes stale, nothing is rewritten, the pools warn; on
// reconnect the resync finds the missed switch and it is applied.
func (e *twEnv) testLinksCut(t *testing.T) {
	shard := e.shards["shard-a"]
	e.settle(t, shard)
	oldAddr := e.truth("shard-a")
	before := e.read(t, e.main)
	for _, f := range e.cuts {
		f.Cut(true)
	}
	cut := true
	defer func() {
		if cut {
			for _, f := range e.cuts {
				f.Cut(false)
			}
		}
	}()
	newAddr := e.failoverAndWait(t, shard, oldAddr)
	e.waitHealth(t, e.main, consulreg.Warning, 10*time.Second)
	if got := e.read(t, e.main); got != before {
		t.Fatalf("rewritten while no Sentinel was reachable:\n%s", got)
	}
	for _, f := range e.cuts {
		f.Cut(false)
	}
	cut = false
	restored := time.Now()
	e.waitServer(t, "shard-a", newAddr)
	e.figure(t, "Sentinel links cut during a failover: the missed switch applied %s after they were restored", time.Since(restored).Round(time.Millisecond))
	e.waitHealth(t, e.main, consulreg.Passing, 10*time.Second)
}

// waitServer waits until every entry of the master name in the main file
// names addr.
func (e *twEnv) waitServer(t *testing.T, name, addr string) {
	t.Helper()
	err := sandbox.Poll(e.ctx, "the file to name "+addr+" for "+name, func(context.Context) error {
		b, err := os.ReadFile(e.main.file)
		if err != nil {
			return err
		}
		pools, err := twemproxy.Pools(b)
		if err != nil {
			return err
		}
		for _, p := range pools {
			for _, s := range p.Servers {
				if s.Name == name && s.Addr() != addr {
					return fmt.Errorf("%s/%s at %s", p.Name, name, s.Addr())
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// replicaOf returns the node of shard that is not master.
func (e *twEnv) replicaOf(t *testing.T, shard *sandbox.Shard, master string) *sandbox.Redis {
	t.Helper()
	for _, n := range shard.Nodes() {
		if n.Addr() != master {
			return n
		}
	}
	t.Fatalf("%s has no replica", shard.Name)
	return nil
}

// (3) both shards fail over at once: at most two restarts, final state right.
func (e *twEnv) testBurst(t *testing.T) {
	ctx := e.ctx
	for _, n := range []string{"shard-a", "shard-b"} {
		e.settle(t, e.shards[n])
	}
	old := map[string]string{"shard-a": e.truth("shard-a"), "shard-b": e.truth("shard-b")}
	restarts := e.main.runner.Status().Restarts
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []string{"shard-a", "shard-b"} {
		wg.Go(func() { errs[i] = e.shards[n].AskFailover(ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, n := range []string{"shard-a", "shard-b"} {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		addr, err := e.shards[n].WaitFailover(wctx, old[n])
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		want[n] = addr
	}
	if err := sandbox.Poll(ctx, "both switches applied", func(context.Context) error {
		pools, err := twemproxy.Pools([]byte(e.read(t, e.main)))
		if err != nil {
			return err
		}
		for _, p := range pools {
			for _, s := range p.Servers {
				if s.Addr() != want[s.Name] {
					return fmt.Errorf("%s/%s at %s", p.Name, s.Name, s.Addr())
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	applied := time.Since(start)
	e.waitApplied(t, e.main)
	e.waitHealth(t, e.main, consulreg.Passing, 10*time.Second)
	n := e.main.runner.Status().Restarts - restarts
	e.figure(t, "burst (both shards failed over at once): %d restarts, both applied %s after the FAILOVER commands", n, applied.Round(time.Millisecond))
	if n > 2 {
		t.Errorf("%d restarts for two failovers, want at most 2", n)
	}
	for _, s := range []struct{ pool, shard string }{{"alpha", "shard-a"}, {"alpha", "shard-b"}, {"beta", "shard-b"}} {
		e.keyFor(t, s.pool, s.shard)
	}
}

// (4) a setting nutcracker rejects: the old file stays, the proxy keeps
// serving, the error is clear, and fixing the setting recovers.
func (e *twEnv) testRejected(t *testing.T) {
	ctx := e.ctx
	p := e.tmpl
	e.settle(t, e.shards["shard-a"])
	before := e.read(t, p)
	os.Setenv("TW_HASH", "sha1") // restored by t.Setenv's cleanup
	oldAddr := e.truth("shard-a")
	e.failoverAndWait(t, e.shards["shard-a"], oldAddr)
	if err := sandbox.Poll(ctx, "the rejection", func(context.Context) error {
		st := p.runner.Status()
		if !strings.Contains(st.LastError, "nutcracker --test-conf rejected") {
			return fmt.Errorf("last error %q", st.LastError)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st := p.runner.Status()
	if !strings.Contains(st.LastError, `hash "sha1" is not one of`) {
		t.Errorf("the error does not name the problem: %s", st.LastError)
	}
	t.Logf("reported: %s", st.LastError)
	if got := e.read(t, p); got != before {
		t.Errorf("the rejected config was written:\n%s", got)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	reply, err := twDo(pctx, p.listen["edge"], "PING")
	cancel()
	if err != nil || reply != "+PONG" {
		t.Errorf("the proxy stopped serving: %q %v", reply, err)
	}
	if v := twMetric(e.metrics.ProxyPipelineFailures.WithLabelValues("tmpl", "validate")); v < 1 {
		t.Errorf("validate failures metric %v", v)
	}
	e.waitHealth(t, p, consulreg.Warning, 10*time.Second)
	checks, _, err := e.admin.Health().Checks("twemproxy", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if c.ServiceID == twemproxy.ServiceID("tw-node", "edge") && c.Type != "alias" && !strings.Contains(c.Output, "rejected") {
			t.Errorf("check output lacks the reason: %s", c.Output)
		}
	}

	os.Setenv("TW_HASH", "fnv1a_64")
	newAddr := ""
	if err := sandbox.Poll(ctx, "recovery", func(context.Context) error {
		newAddr = e.truth("shard-a")
		if newAddr == oldAddr || !strings.Contains(e.read(t, p), twServer(newAddr)+":1 shard-a") {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.waitHealth(t, p, consulreg.Passing, 10*time.Second)
}

// (5a) nutcracker dies in supervise mode: restarted at once.
func (e *twEnv) testNutcrackerDies(t *testing.T) {
	pid := e.main.runner.Status().PID
	if pid == 0 {
		t.Fatal("no nutcracker child")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Poll finely: the figure is a few milliseconds.
	var back time.Duration
	for deadline := killed.Add(30 * time.Second); back == 0; time.Sleep(200 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatal("nutcracker not back after 30s")
		}
		ctx, cancel := context.WithTimeout(e.ctx, 100*time.Millisecond)
		reply, err := twDo(ctx, e.main.listen["alpha"], "PING")
		cancel()
		if err == nil && reply == "+PONG" {
			back = time.Since(killed)
		}
	}
	if err := sandbox.Poll(e.ctx, "a new child in the status", func(context.Context) error {
		if st := e.main.runner.Status(); st.PID == 0 || st.PID == pid {
			return fmt.Errorf("pid %d", st.PID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.figure(t, "nutcracker SIGKILLed: answering again after %s", back.Round(10*time.Microsecond))
	e.waitHealth(t, e.main, consulreg.Passing, 10*time.Second)
	if !strings.Contains(e.log.String(), "nutcracker exited; restarting") {
		t.Error("the crash was not logged")
	}
}

// twHelperEnv carries the helper agent's settings.
const twHelperEnv = "RCA_TW_HELPER"

type twHelperConfig struct {
	Sentinels  []string `json:"sentinels"`
	ConfigFile string   `json:"config_file"`
	Argv       []string `json:"argv"`
	// CrashPoint is the step of a config write at which the helper
	// SIGKILLs itself (see twemproxy.WriteOptions.CrashPoint); empty: none.
	CrashPoint string `json:"crash_point,omitempty"`
	Nutcracker string `json:"nutcracker"`
}

// TestTwemproxyHelperAgent is the agent process that testAgentKilledMidWrite
// SIGKILLs; it only runs when started by that test.
func TestTwemproxyHelperAgent(t *testing.T) {
	raw := os.Getenv(twHelperEnv)
	if raw == "" {
		t.Skip("helper process of TestTwemproxyFailover")
	}
	var cfg twHelperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := hclog.New(&hclog.LoggerOptions{Name: "helper", Level: hclog.Debug, Output: os.Stderr})
	mon, err := discovery.NewMonitor(discovery.MonitorOptions{Addresses: cfg.Sentinels, RedisPassword: twPassword, Logger: logger.Named(telemetry.LogSentinel), Metrics: telemetry.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = mon.Run(ctx) }()
	if err := sandbox.Poll(ctx, "truth", func(context.Context) error {
		m := mon.Masters()
		if !m["shard-a"].Known() || !m["shard-b"].Known() {
			return errors.New("no truth yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r, err := twemproxy.New(twemproxy.Options{
		Name: "helper", Node: "tw-helper", ConfigFile: cfg.ConfigFile, NutcrackerBin: cfg.Nutcracker,
		Restart: twemproxy.RestartOptions{Mode: twemproxy.ModeSupervise, Command: cfg.Argv},
		Masters: twTruth{mon}, Logger: logger, Metrics: telemetry.Discard(),
		CrashPoint: func(step string) {
			if step == cfg.CrashPoint {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// (5b) the agent is SIGKILLed in the middle of a rewrite: the file is the
// old or the new one, never a mix, its nutcracker child dies with it, and
// the next agent finishes the job.
func (e *twEnv) testAgentKilledMidWrite(t *testing.T) {
	dir, err := e.c.ProcessDir("twemproxy-helper")
	if err != nil {
		t.Fatal(err)
	}
	ip := e.c.NewIP()
	var ports [3]int
	for i := range ports {
		if ports[i], err = e.c.FreePort(ip); err != nil {
			t.Fatal(err)
		}
	}
	alpha := net.JoinHostPort(ip, strconv.Itoa(ports[0]))
	beta := net.JoinHostPort(ip, strconv.Itoa(ports[1]))
	// The file names the replicas: stale, so the first thing an agent does
	// is rewrite it.
	replicaA := e.replicaOf(t, e.shards["shard-a"], e.truth("shard-a")).Addr()
	replicaB := e.replicaOf(t, e.shards["shard-b"], e.truth("shard-b")).Addr()
	stale := fmt.Sprintf(twConfigText, alpha, beta, replicaA, replicaB, twPassword)
	file := filepath.Join(dir, "nutcracker.yml")
	if err := os.WriteFile(file, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := twemproxy.Render(twemproxy.RenderOptions{ConfigFile: file}, twTruth{e.monitor}.Masters())
	if err != nil {
		t.Fatal(err)
	}
	if !want.Changed() {
		t.Fatal("the stale file is not stale")
	}
	start := func(name, crashPoint string) *sandbox.Process {
		cfg, _ := json.Marshal(twHelperConfig{
			Sentinels: e.sentinels(), ConfigFile: file, Nutcracker: e.nc, CrashPoint: crashPoint,
			Argv: []string{e.nc, "-c", file, "-s", strconv.Itoa(ports[2]), "-a", ip, "-o", filepath.Join(dir, "nutcracker.log")},
		})
		p, err := e.c.Start(sandbox.ProcessSpec{
			Name: name, Argv: []string{os.Args[0], "-test.run=^TestTwemproxyHelperAgent$", "-test.v"},
			Env: []string{twHelperEnv + "=" + string(cfg)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	waitKilled := func(p *sandbox.Process) {
		t.Helper()
		select {
		case <-p.Exited():
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not die at its crash point", p.Name())
		}
		var exit *exec.ExitError
		if !errors.As(p.ExitErr(), &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("%s: %v, want death by SIGKILL", p.Name(), p.ExitErr())
		}
	}
	check := func(what, want string) {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Fatalf("after %s the file is neither what was expected:\n%s", what, b)
		}
	}

	// Killed after the new content is on disk in the temp file: old file.
	p1 := start("agent-crash-1", "after-temp-write")
	waitKilled(p1)
	check("a kill before the rename", stale)
	// Killed right after the rename: the new file, and no proxy restarted.
	p2 := start("agent-crash-2", "after-rename")
	waitKilled(p2)
	check("a kill after the rename", string(want.Desired))
	if b, _ := os.ReadFile(file + twemproxy.BackupSuffix); string(b) != stale {
		t.Error("backup is not the previous file")
	}
	marker := filepath.Join(dir, ".nutcracker.yml.rca-restart-pending")
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("no pending-restart marker after a kill between rename and restart: %v", err)
	}
	// The next agent starts nutcracker on the new file and cleans up.
	p3 := start("agent-3", "")
	if err := sandbox.Poll(e.ctx, "helper proxy serving", func(ctx context.Context) error {
		_, err := twDo(ctx, alpha, "PING")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	check("a clean start", string(want.Desired))
	if err := sandbox.Poll(e.ctx, "the pending-restart marker removed", func(context.Context) error {
		if _, err := os.Stat(marker); !os.IsNotExist(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		if strings.Contains(en.Name(), ".rca-tmp-") {
			t.Errorf("temp file left after a clean start: %s", en.Name())
		}
	}
	// Killing the agent takes its nutcracker down too (no orphan holds the
	// ports the next agent needs).
	if err := p3.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Poll(e.ctx, "helper's nutcracker gone", func(ctx context.Context) error {
		if _, err := twDo(ctx, alpha, "PING"); err == nil {
			return errors.New("still answering")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (e *twEnv) sentinels() []string {
	var out []string
	for _, s := range e.shards["shard-a"].Sentinels {
		out = append(out, s.Addr())
	}
	return out
}

// (6) render shows the file the agent would write without touching it.
func (e *twEnv) testRender(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nutcracker.yml")
	// The operator's file as if the agent had been away: every shard
	// named by its replica.
	stale := fmt.Sprintf(twConfigText, e.main.listen["alpha"], e.main.listen["beta"],
		e.replicaOf(t, e.shards["shard-a"], e.truth("shard-a")).Addr(),
		e.replicaOf(t, e.shards["shard-b"], e.truth("shard-b")).Addr(), twPassword)
	if err := os.WriteFile(file, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(file, old, old); err != nil {
		t.Fatal(err)
	}
	rd, err := twemproxy.Render(twemproxy.RenderOptions{ConfigFile: file}, twTruth{e.monitor}.Masters())
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.Changes) != 3 {
		t.Fatalf("render changes: %+v", rd.Changes)
	}
	// The agent applied the same truth to the same file: same bytes.
	if got := e.read(t, e.main); string(rd.Desired) != got {
		t.Errorf("render differs from what the agent wrote:\n--- render\n%s\n--- agent\n%s", rd.Desired, got)
	}
	b, _ := os.ReadFile(file)
	st, _ := os.Stat(file)
	if string(b) != stale || !st.ModTime().Equal(old) {
		t.Error("render touched the file")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("render left files behind: %v", entries)
	}
}

// figure logs a measured figure in the running step and keeps it for the
// summary at the end.
func (e *twEnv) figure(t *testing.T, format string, a ...any) {
	t.Helper()
	s := fmt.Sprintf(format, a...)
	t.Log(s)
	e.figures = append(e.figures, s)
}

func twMax(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	return slices.Max(ds).Round(10 * time.Microsecond).String()
}

func twMetric(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil || d.Counter == nil {
		return -1
	}
	return d.Counter.GetValue()
}

func twHistogramCount(o prometheus.Observer) uint64 {
	var d dto.Metric
	if err := o.(prometheus.Metric).Write(&d); err != nil || d.Histogram == nil {
		return 0
	}
	return d.Histogram.GetSampleCount()
}

func twTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return twLastLines(string(b), n)
}

func twLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
