package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The demo stack of docker-compose.yml, as the test knows it: container names
// and the last byte of each fixed address on the network (see the file).
var composeHosts = map[string]string{
	"consul": "10", "redis-a1": "11", "redis-a2": "12", "redis-a3": "13",
	"redis-b1": "21", "redis-b2": "22", "redis-b3": "23",
	"sentinel-1": "31", "sentinel-2": "32", "sentinel-3": "33", "twemproxy": "40",
	"haproxy": "41", "prometheus": "50",
}

// TestCompose brings up docker-compose.yml for real (issue 6): checks Consul
// DNS and twemproxy from the host, stops the container of a master and checks
// the failover in Sentinel, Consul DNS, twemproxy and the dashboard, then cuts
// another master off the network and checks the split-brain guard: DNS never
// answers two masters for a shard, and the old master is never tagged master
// again when it comes back. Last it checks the stack's Prometheus, which loads
// deploy/prometheus/alerts.yml: no alert fired in all that, and
// RedisShardNoMaster fires while a master that Sentinel cannot replace is cut
// off, and resolves when it is back. Then HAProxy, driven by its agent: it
// followed all that, and follows a stopped master with a writer through it
// (compose_haproxy_test.go). It tears the stack down at the end.
//
// It needs Docker (integration/compose/stack.sh installs and starts it as
// root) and runs only with RCA_COMPOSE=1 (make test-compose); RCA_COMPOSE_KEEP=1
// leaves the stack up afterwards. Traffic goes only to loopback (published
// ports) and to the containers' own network.
func TestCompose(t *testing.T) {
	if os.Getenv("RCA_COMPOSE") == "" {
		t.Skip("set RCA_COMPOSE=1 (make test-compose): builds images and runs the Docker stack")
	}
	if testing.Short() {
		t.Skip("runs the Docker stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	s := newComposeStack(t)
	s.start(ctx)

	dns := s.watchDNS(ctx, "shard-a", "shard-b")
	defer func() {
		samples, bad := dns.stop()
		t.Logf("DNS watch: %d answers for each shard's master name during the test", samples)
		for i, b := range bad {
			if i == 20 {
				t.Errorf("split brain in DNS: and %d more answers like these", len(bad)-i)
				break
			}
			t.Errorf("split brain in DNS: %s", b)
		}
	}()
	_ = t.Run("Steady", func(t *testing.T) { s.checkSteady(ctx, t); s.checkPrometheus(ctx, t) }) &&
		t.Run("StopMaster", func(t *testing.T) { s.checkStopMaster(ctx, t, "shard-a") }) &&
		t.Run("Partition", func(t *testing.T) { s.checkPartition(ctx, t, "shard-b") }) &&
		t.Run("NoMasterAlert", func(t *testing.T) { s.checkNoMasterAlert(ctx, t, "shard-a") }) &&
		t.Run("HAProxy", func(t *testing.T) { s.checkHAProxy(ctx, t, "shard-b") })
}

// TestDeploySamples checks that the sample agent configs in deploy/config are
// valid but for the secret files and directories of the host they are meant for.
func TestDeploySamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "config", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sample configs in deploy/config: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, probs := config.Parse(raw)
		if c == nil || len(probs) > 0 {
			t.Errorf("%s: %v", filepath.Base(f), probs)
			continue
		}
		for _, p := range c.Finish() {
			if strings.Contains(p, "cannot read") || strings.Contains(p, "directory:") {
				continue // the file or directory lives on the target host
			}
			t.Errorf("%s: %s", filepath.Base(f), p)
		}
	}
}

type composeStack struct {
	t      *testing.T
	root   string
	net    string // first three bytes of the network's addresses
	consul *api.Client
	dns    *net.Resolver
	http   *http.Client
	ports  struct {
		consul, dns, proxy, dashboard, prometheus string
		haproxy                                   map[string]string // the frontends' published ports by shard
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd) // go test runs in integration/
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newComposeStack(t *testing.T) *composeStack {
	s := &composeStack{t: t, root: repoRoot(t), net: envOr("RCA_NET", "172.28.0")}
	s.ports.consul = envOr("RCA_CONSUL_HTTP_PORT", "8500")
	s.ports.dns = envOr("RCA_CONSUL_DNS_PORT", "8600")
	s.ports.proxy = envOr("RCA_TWEMPROXY_PORT", "22121")
	s.ports.dashboard = envOr("RCA_DASHBOARD_PORT", "8765")
	s.ports.prometheus = envOr("RCA_PROMETHEUS_PORT", "9090")
	s.ports.haproxy = map[string]string{"shard-a": envOr("RCA_HAPROXY_A_PORT", "6380"), "shard-b": envOr("RCA_HAPROXY_B_PORT", "6381")}
	c, err := api.NewClient(&api.Config{Address: "127.0.0.1:" + s.ports.consul})
	if err != nil {
		t.Fatal(err)
	}
	s.consul = c
	dnsAddr := "127.0.0.1:" + s.ports.dns
	s.dns = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
	s.http = &http.Client{Timeout: 3 * time.Second}
	return s
}

// ip is the fixed address of a container of the stack.
func (s *composeStack) ip(host string) string { return s.net + "." + composeHosts[host] }

// host is the container (without the rca- prefix) that has the address.
func (s *composeStack) host(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		h = addr
	}
	for name := range composeHosts {
		if s.ip(name) == h {
			return name
		}
	}
	return addr
}

// stackScript runs integration/compose/stack.sh; its output goes to the test
// log only when it fails or the test runs with -v.
func (s *composeStack) stackScript(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(s.root, "integration", "compose", "stack.sh")}, args...)...)
	cmd.Dir = s.root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	s.t.Logf("stack.sh %s: %s (%v)\n%s", strings.Join(args, " "), time.Since(start).Round(time.Second), err, tail(out.String(), 40))
	return err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func (s *composeStack) docker(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// start tears down any leftover of an earlier run, brings the stack up and
// registers the teardown, which prints the containers' logs if the test failed.
func (s *composeStack) start(ctx context.Context) {
	t := s.t
	if err := s.stackScript(ctx, "down"); err != nil {
		t.Logf("cleaning up an earlier stack failed: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			names := make([]string, 0, len(composeHosts))
			for name := range composeHosts {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				out, err := exec.CommandContext(ctx, "docker", "logs", "--tail", "60", "rca-"+name).CombinedOutput()
				if err == nil {
					t.Logf("---- logs of rca-%s ----\n%s", name, out)
				}
			}
		}
		if os.Getenv("RCA_COMPOSE_KEEP") != "" {
			t.Logf("RCA_COMPOSE_KEEP is set: the stack stays up (make compose-down)")
			return
		}
		if err := s.stackScript(ctx, "down"); err != nil {
			t.Errorf("tearing the stack down: %v", err)
		}
	})
	if err := s.stackScript(ctx, "up"); err != nil {
		t.Fatalf("the stack did not come up: %v", err)
	}
}

// waitFor polls cond until it returns ok or the timeout passes; the last
// detail it returned explains a failure.
func waitFor(ctx context.Context, t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var detail string
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, d := cond(cctx)
		cancel()
		detail = d
		if ok {
			t.Logf("%s: after %s", what, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not within %s: %s", what, timeout, detail)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lookup returns the sorted A records of name from Consul DNS; a name with
// no healthy instance has none.
func (s *composeStack) lookup(ctx context.Context, name string) ([]string, error) {
	addrs, err := s.dns.LookupHost(ctx, name+".")
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return nil, nil
	}
	slices.Sort(addrs)
	return addrs, err
}

// sentinelTruth is the address a majority of the three Sentinels give for
// the master name, or "" without a majority.
func (s *composeStack) sentinelTruth(ctx context.Context, master string) (string, string) {
	votes := map[string]int{}
	var views []string
	for _, name := range []string{"sentinel-1", "sentinel-2", "sentinel-3"} {
		c := redis.NewSentinelClient(&redis.Options{Addr: net.JoinHostPort(s.ip(name), "26379"), DialTimeout: time.Second, ReadTimeout: time.Second})
		v, err := c.GetMasterAddrByName(ctx, master).Result()
		_ = c.Close()
		if err != nil || len(v) != 2 {
			views = append(views, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		a := net.JoinHostPort(v[0], v[1])
		votes[a]++
		views = append(views, name+": "+a)
	}
	for a, n := range votes {
		if n >= 2 {
			return a, strings.Join(views, ", ")
		}
	}
	return "", strings.Join(views, ", ")
}

// redisRole is what ROLE says on the Redis at addr (master, slave), or "".
func redisRole(ctx context.Context, addr string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	v, err := c.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return ""
	}
	r, _ := v[0].(string)
	return r
}

// redisServices is every instance of the redis service in Consul by ID,
// whatever its health.
func (s *composeStack) redisServices(ctx context.Context) (map[string]*api.ServiceEntry, error) {
	entries, _, err := s.consul.Health().Service("redis", "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	out := map[string]*api.ServiceEntry{}
	for _, e := range entries {
		out[e.Service.ID] = e
	}
	return out, nil
}

// redisID is the Consul service ID of a Redis at the address (internal/consulname).
func redisID(addr string) string {
	h, p, _ := net.SplitHostPort(addr)
	return "redis-" + h + "-" + p
}

func describe(e *api.ServiceEntry) string {
	if e == nil {
		return "not registered"
	}
	return fmt.Sprintf("%s tags=%v status=%s output=%q", e.Service.ID, e.Service.Tags, e.Checks.AggregatedStatus(), serviceOutput(e))
}

func serviceOutput(e *api.ServiceEntry) string {
	for _, c := range e.Checks {
		if c.ServiceID == e.Service.ID && c.Type != "alias" { // the status check, not the agent's heartbeat
			return c.Output
		}
	}
	return ""
}

func (s *composeStack) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (s *composeStack) dashboardURL(path string) string {
	return "http://127.0.0.1:" + s.ports.dashboard + path
}

// shardConsistent reports whether Consul DNS, the Consul catalog, twemproxy's
// agent and the dashboard's cluster view all name want as the master of the
// shard, and nothing else.
func (s *composeStack) shardConsistent(ctx context.Context, shard, want string) (bool, string) {
	wantIP, _, _ := net.SplitHostPort(want)
	got, err := s.lookup(ctx, shard+"-master.redis.service.consul")
	if err != nil || !slices.Equal(got, []string{wantIP}) {
		return false, fmt.Sprintf("DNS %s-master: %v %v, want %s", shard, got, err, wantIP)
	}
	svcs, err := s.redisServices(ctx)
	if err != nil {
		return false, fmt.Sprintf("consul: %v", err)
	}
	e := svcs[redisID(want)]
	if e == nil || !slices.Contains(e.Service.Tags, "master") || !slices.Contains(e.Service.Tags, shard+"-master") ||
		e.Checks.AggregatedStatus() != api.HealthPassing {
		return false, "consul: new master is " + describe(e)
	}
	var st status.Snapshot
	if err := s.getJSON(ctx, s.dashboardURL("/v1/status"), &st); err != nil {
		return false, fmt.Sprintf("twemproxy agent status: %v", err)
	}
	if ok, d := proxyPointsAt(st, shard, want); !ok {
		return false, d
	}
	var cl status.Cluster
	if err := s.getJSON(ctx, s.dashboardURL("/v1/cluster"), &cl); err != nil {
		return false, fmt.Sprintf("dashboard cluster view: %v", err)
	}
	for _, sh := range cl.Shards {
		if sh.Name != shard {
			continue
		}
		if len(sh.Masters) != 1 || sh.Masters[0].Addr != want {
			return false, fmt.Sprintf("dashboard: shard %s masters %+v, want only %s", shard, sh.Masters, want)
		}
		return true, ""
	}
	return false, fmt.Sprintf("dashboard: no shard %s in %+v", shard, cl.Shards)
}

// proxyPointsAt reports whether the twemproxy agent's pool has the shard's
// server at addr and calls the pool healthy.
func proxyPointsAt(st status.Snapshot, shard, addr string) (bool, string) {
	for _, p := range st.Proxies {
		for _, pool := range p.Pools {
			for _, sv := range pool.Servers {
				if sv.Name != shard {
					continue
				}
				if sv.Addr != addr || !sv.Matches {
					return false, fmt.Sprintf("twemproxy: server %s is %s (matches=%v), want %s", shard, sv.Addr, sv.Matches, addr)
				}
				if pool.Status != api.HealthPassing {
					return false, fmt.Sprintf("twemproxy: pool %s is %s: %s", pool.Name, pool.Status, pool.Why)
				}
				return true, ""
			}
		}
	}
	return false, fmt.Sprintf("twemproxy: no server named %s in %+v", shard, st.Proxies)
}

// writeThroughProxy sets n keys through twemproxy and checks that each one
// landed on the master Sentinel names for one of the shards.
func (s *composeStack) writeThroughProxy(ctx context.Context, prefix string, n int, masters map[string]string) (bool, string) {
	proxy := "127.0.0.1:" + s.ports.proxy
	for i := range n {
		k := fmt.Sprintf("%s:%d", prefix, i)
		// sandbox.Do speaks plain RESP2: go-redis opens with HELLO, on which
		// twemproxy hangs up.
		if v, err := sandbox.Do(ctx, proxy, "SET", k, fmt.Sprint(i)); err != nil || v != "OK" {
			return false, fmt.Sprintf("SET %s through twemproxy: %v %v", k, v, err)
		}
	}
	total := 0
	perShard := map[string]int{}
	for shard, addr := range masters {
		c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		for i := range n {
			if c.Exists(ctx, fmt.Sprintf("%s:%d", prefix, i)).Val() == 1 {
				perShard[shard]++
				total++
			}
		}
		c.Close()
	}
	if total != n || len(perShard) != len(masters) {
		return false, fmt.Sprintf("of %d keys written through twemproxy the masters %v hold %v", n, masters, perShard)
	}
	return true, ""
}

// checkSteady: the stack as it starts. Each shard's first Redis is master.
func (s *composeStack) checkSteady(ctx context.Context, t *testing.T) {
	masters := map[string]string{"shard-a": s.ip("redis-a1") + ":6379", "shard-b": s.ip("redis-b1") + ":6379"}
	for shard, addr := range masters {
		waitFor(ctx, t, 90*time.Second, shard+" master everywhere", func(ctx context.Context) (bool, string) {
			return s.shardConsistent(ctx, shard, addr)
		})
	}
	waitFor(ctx, t, 30*time.Second, "the DNS names of README's Consul names", func(ctx context.Context) (bool, string) {
		want := map[string][]string{
			"master.redis.service.consul":          {s.ip("redis-a1"), s.ip("redis-b1")},
			"replica.redis.service.consul":         {s.ip("redis-a2"), s.ip("redis-a3"), s.ip("redis-b2"), s.ip("redis-b3")},
			"redis-sentinel.service.consul":        {s.ip("sentinel-1"), s.ip("sentinel-2"), s.ip("sentinel-3")},
			"shard-a-replica.redis.service.consul": {s.ip("redis-a2"), s.ip("redis-a3")},
			"twemproxy.service.consul":             {s.ip("twemproxy")},
		}
		for name, w := range want {
			slices.Sort(w)
			got, err := s.lookup(ctx, name)
			if err != nil || !slices.Equal(got, w) {
				return false, fmt.Sprintf("%s: %v %v, want %v", name, got, err, w)
			}
		}
		_, srvs, err := s.dns.LookupSRV(ctx, "", "", "twemproxy.service.consul.")
		if err != nil || len(srvs) != 1 || srvs[0].Port != 22121 {
			return false, fmt.Sprintf("twemproxy SRV: %+v %v, want port 22121", srvs, err)
		}
		return true, ""
	})
	// The command the README gives a person, as they would type it.
	if _, err := exec.LookPath("dig"); err == nil {
		out, err := exec.CommandContext(ctx, "dig", "@localhost", "-p", s.ports.dns, "+short", "+time=2", "+tries=2", "master.redis.service.consul").CombinedOutput()
		got := strings.Fields(string(out))
		slices.Sort(got)
		if want := []string{s.ip("redis-a1"), s.ip("redis-b1")}; err != nil || !slices.Equal(got, want) {
			t.Errorf("dig @localhost -p %s master.redis.service.consul: %q %v, want %v", s.ports.dns, out, err, want)
		}
	}
	waitFor(ctx, t, 30*time.Second, "writes through twemproxy land on both masters", func(ctx context.Context) (bool, string) {
		return s.writeThroughProxy(ctx, "steady", 40, masters)
	})
	// The dashboard page a person opens.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.dashboardURL("/"), nil)
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
		!bytes.Contains(page, []byte("shard-a")) || !bytes.Contains(page, []byte("shard-b")) {
		t.Errorf("dashboard /: %s %s, want an HTML page naming shard-a and shard-b; got %.300q", resp.Status, resp.Header.Get("Content-Type"), page)
	}
}

// checkStopMaster stops the container of the shard's master (a clean stop:
// the agent deregisters, Redis shuts down) and checks that Sentinel, Consul,
// twemproxy and the dashboard follow; then starts it again and checks that it
// comes back as a replica.
func (s *composeStack) checkStopMaster(ctx context.Context, t *testing.T, shard string) {
	old, views := s.sentinelTruth(ctx, shard)
	if old == "" {
		t.Fatalf("no Sentinel majority for %s: %s", shard, views)
	}
	oldHost := s.host(old)
	t.Logf("stopping rca-%s, master of %s at %s", oldHost, shard, old)
	stopped := time.Now()
	if _, err := s.docker(ctx, "stop", "-t", "10", "rca-"+oldHost); err != nil {
		t.Fatal(err)
	}
	var next string
	waitFor(ctx, t, 60*time.Second, "Sentinel elects a new master", func(ctx context.Context) (bool, string) {
		a, v := s.sentinelTruth(ctx, shard)
		next = a
		return a != "" && a != old, v
	})
	t.Logf("Sentinel moved %s from %s to %s (%s) %s after the stop", shard, old, next, s.host(next), time.Since(stopped).Round(time.Millisecond))
	waitFor(ctx, t, 30*time.Second, "DNS, Consul, twemproxy and the dashboard follow", func(ctx context.Context) (bool, string) {
		return s.shardConsistent(ctx, shard, next)
	})
	other := s.ip("redis-b1") + ":6379"
	if shard == "shard-b" {
		other = s.ip("redis-a1") + ":6379"
	}
	otherShard := map[string]string{"shard-a": "shard-b", "shard-b": "shard-a"}[shard]
	if a, _ := s.sentinelTruth(ctx, otherShard); a != "" {
		other = a
	}
	waitFor(ctx, t, 30*time.Second, "writes through twemproxy land on the new master", func(ctx context.Context) (bool, string) {
		return s.writeThroughProxy(ctx, "after-stop", 40, map[string]string{shard: next, otherShard: other})
	})
	waitFor(ctx, t, 15*time.Second, "the dashboard's failover timeline shows it", func(ctx context.Context) (bool, string) {
		var st status.Snapshot
		if err := s.getJSON(ctx, s.dashboardURL("/v1/status"), &st); err != nil {
			return false, err.Error()
		}
		for _, f := range st.Failovers {
			if f.Master == shard && strings.Contains(f.To, strings.Split(next, ":")[0]) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("failovers %+v", st.Failovers)
	})
	svcs, err := s.redisServices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e := svcs[redisID(old)]; e != nil && e.Checks.AggregatedStatus() != api.HealthCritical {
		t.Errorf("stopped master still in Consul: %s", describe(e))
	}

	t.Logf("starting rca-%s again", oldHost)
	if _, err := s.docker(ctx, "start", "rca-"+oldHost); err != nil {
		t.Fatal(err)
	}
	// It comes back with the config it had, as a master, until Sentinel
	// turns it into a replica: the agent must hold it out of DNS meanwhile.
	back := time.Now()
	g := s.watchReturn(t, old)
	waitFor(ctx, t, 60*time.Second, "the old master is back as a passing replica", g.cond)
	t.Logf("old master back as replica %s after its start; held critical while it claimed master: %v",
		time.Since(back).Round(time.Millisecond), g.guardSeen)
	if ok, d := s.shardConsistent(ctx, shard, next); !ok {
		t.Errorf("after the old master came back: %s", d)
	}
}

// checkPartition cuts the container of the shard's master off the network.
// Its Redis stays up and stays master on its own side; Sentinel elects
// another. While cut off, its agent cannot refresh its TTL, so Consul drops it
// before the new master is elected; when it comes back it still claims
// master until Sentinel turns it into a replica, and the agent must never tag
// it master then (the role logic of docs/ARCHITECTURE.md).
func (s *composeStack) checkPartition(ctx context.Context, t *testing.T, shard string) {
	old, views := s.sentinelTruth(ctx, shard)
	if old == "" {
		t.Fatalf("no Sentinel majority for %s: %s", shard, views)
	}
	oldHost := s.host(old)
	t.Logf("disconnecting rca-%s, master of %s at %s, from the network", oldHost, shard, old)
	cut := time.Now()
	if _, err := s.docker(ctx, "network", "disconnect", "redis-demo", "rca-"+oldHost); err != nil {
		t.Fatal(err)
	}
	reconnected := false
	reconnect := func() {
		if reconnected {
			return
		}
		reconnected = true
		if _, err := s.docker(context.Background(), "network", "connect", "--ip", s.ip(oldHost), "--alias", oldHost, "redis-demo", "rca-"+oldHost); err != nil {
			t.Errorf("reconnecting: %v", err)
		}
	}
	defer reconnect()

	var next string
	waitFor(ctx, t, 60*time.Second, "Sentinel elects a new master", func(ctx context.Context) (bool, string) {
		a, v := s.sentinelTruth(ctx, shard)
		next = a
		return a != "" && a != old, v
	})
	t.Logf("Sentinel moved %s from %s to %s %s after the cut", shard, old, next, time.Since(cut).Round(time.Millisecond))
	waitFor(ctx, t, 30*time.Second, "DNS, Consul, twemproxy and the dashboard follow", func(ctx context.Context) (bool, string) {
		return s.shardConsistent(ctx, shard, next)
	})
	// The cut-off side: Redis still believes it is the master.
	out, err := s.docker(ctx, "exec", "rca-"+oldHost, "redis-cli", "role")
	if err != nil || !strings.HasPrefix(out, "master") {
		t.Fatalf("the cut-off Redis should still be master on its side: %q %v", out, err)
	}
	svcs, err := s.redisServices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e := svcs[redisID(old)]; e != nil && e.Checks.AggregatedStatus() != api.HealthCritical {
		t.Errorf("cut-off master not critical in Consul: %s", describe(e))
	}

	t.Logf("reconnecting rca-%s", oldHost)
	reconnect()
	back := time.Now()
	// From now until Sentinel demotes it the old master claims master.
	g := s.watchReturn(t, old)
	waitFor(ctx, t, 60*time.Second, "the old master is demoted and registered as a passing replica", g.cond)
	t.Logf("old master back as replica %s after reconnecting; held critical while it claimed master: %v",
		time.Since(back).Round(time.Millisecond), g.guardSeen)
	if ok, d := s.shardConsistent(ctx, shard, next); !ok {
		t.Errorf("after the partition healed: %s", d)
	}
}

// returnWatch follows an old master that comes back: until it is a passing
// replica it must never be in Consul as a master that DNS would answer.
type returnWatch struct {
	t         *testing.T
	s         *composeStack
	old       string
	guardSeen bool // seen critical while its Redis claimed master
	reported  bool
}

func (s *composeStack) watchReturn(t *testing.T, old string) *returnWatch {
	return &returnWatch{t: t, s: s, old: old}
}

func (g *returnWatch) cond(ctx context.Context) (bool, string) {
	svcs, err := g.s.redisServices(ctx)
	if err != nil {
		return false, err.Error()
	}
	e := svcs[redisID(g.old)]
	if e == nil {
		return false, "not registered"
	}
	st := e.Checks.AggregatedStatus()
	role := redisRole(ctx, g.old)
	if slices.Contains(e.Service.Tags, "master") && st != api.HealthCritical && !g.reported {
		g.reported = true
		g.t.Errorf("split brain: the returning old master (ROLE %s) is in DNS as a master: %s", role, describe(e))
	}
	if st == api.HealthCritical && role == "master" {
		g.guardSeen = true
	}
	ok := slices.Contains(e.Service.Tags, "replica") && st == api.HealthPassing && role == "slave"
	return ok, fmt.Sprintf("ROLE %s, %s", role, describe(e))
}

// dnsWatch polls each shard's master name and records every answer with more
// than one address: a split brain that clients would see.
type dnsWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	shards  int
	samples int
	bad     []string
}

func (s *composeStack) watchDNS(ctx context.Context, shards ...string) *dnsWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &dnsWatch{cancel: cancel, done: make(chan struct{}), shards: len(shards)}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, sh := range shards {
				qctx, qcancel := context.WithTimeout(ctx, time.Second)
				got, err := s.lookup(qctx, sh+"-master.redis.service.consul")
				qcancel()
				w.mu.Lock()
				if err == nil {
					w.samples++
				}
				if len(got) > 1 {
					w.bad = append(w.bad, fmt.Sprintf("%s %s-master answered %v", time.Now().Format("15:04:05.000"), sh, got))
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *dnsWatch) stop() (int, []string) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples / w.shards, w.bad
}
