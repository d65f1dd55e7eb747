package integration

import (
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
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"gopkg.in/yaml.v3"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The helpers of this file start with "hx" so that they cannot clash with
// the other integration tests of the package.

// hxReconcile is the agent's slow tick in these tests.
const hxReconcile = time.Second

// hxDriverOff, when set in the environment, starts the agent without its
// haproxy section: the kill-master step must then fail, which shows that
// it tests the driver and not HAProxy's own checks.
const hxDriverOff = "RCA_TEST_HAPROXY_DRIVER_OFF"

// TestHAProxy drives a real HAProxy 2.6 in front of a real Sentinel-watched
// shard through a real agent process and a real Consul: a kill -9 of the
// master and its return as a master, a planned failover with a writer, a
// HAProxy restarted with its original config, and `validate` on a wrong
// backend name. Beside the driven backend the same HAProxy runs the classic
// role:master tcp-check backend over every node, written to in the same way,
// for comparison.
func TestHAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, HAProxy and the agent")
	}
	e := hxSetup(t)
	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"validate-wrong-backend", e.testValidate},
		{"kill-master-and-old-master-returns", e.testKillMaster},
		{"haproxy-restarted-with-original-config", e.testRestart},
		{"planned-failover", e.testPlannedFailover},
		{"sighup-renames-the-frontend", e.testReload},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			break
		}
	}
	t.Logf("figures:\n  %s", strings.Join(e.figures, "\n  "))
}

type hxEnv struct {
	ctx     context.Context
	c       *sandbox.Cluster
	consul  *api.Client
	shard   *sandbox.Shard
	hap     *sandbox.HAProxy
	agent   *sandbox.Agent
	cfg     map[string]any
	figures []string
}

// hxServiceID is the Consul ID of the driven frontend.
const hxServiceID = "haproxy-hx-1-edge-redis-rw"

func hxSetup(t *testing.T) *hxEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	t.Cleanup(cancel)
	c, consul, client := consulStack(t)
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	var ref []sandbox.HAProxyServer
	for _, r := range shard.Nodes() {
		ref = append(ref, sandbox.HAProxyServer{Name: r.Name(), Addr: r.Addr()})
	}
	hap, err := c.StartHAProxy(sandbox.HAProxyOptions{Backends: []sandbox.HAProxyBackend{
		// The operator's backend: one server, named after the shard, with
		// a plain liveness check; the agent moves it.
		{Name: "redis-rw", Servers: []sandbox.HAProxyServer{{Name: "mymaster", Addr: shard.Master.Addr()}}, Check: true, Inter: 100 * time.Millisecond},
		// The classic recipe, tuned: role:master, inter 100ms fall 1 rise 1.
		{Name: "redis-ref", Servers: ref, RoleCheck: true, Inter: 100 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	cfg := map[string]any{
		"node_name": "hx-1",
		"consul":    map[string]any{"address": consul.HTTPAddr(), "ttl": "2s"},
		"sentinel":  map[string]any{"addresses": sentinels},
		"haproxy": []any{map[string]any{
			"name": "edge", "runtime_api": hap.Socket, "reconcile": hxReconcile.String(),
			"servers":   []any{map[string]any{"backend": "redis-rw", "server": "mymaster", "master_name": shard.Name}},
			"frontends": []any{map[string]any{"name": "redis-rw", "address": hap.Frontends["redis-rw"], "backends": []any{"redis-rw"}}},
		}},
		"timing": map[string]any{"tick": "250ms", "consul_resync": "500ms"},
		"log":    map[string]any{"level": "debug"},
	}
	run := cfg
	if os.Getenv(hxDriverOff) != "" {
		t.Logf("%s is set: the agent runs without its haproxy section", hxDriverOff)
		run = map[string]any{}
		for k, v := range cfg {
			run[k] = v
		}
		delete(run, "haproxy")
		run["sentinels"] = []any{map[string]any{"address": sentinels[0]}}
	}
	agent, err := c.StartAgent("", "agent-hx", c.NewIP(), run)
	if err != nil {
		t.Fatal(err)
	}
	e := &hxEnv{ctx: ctx, c: c, consul: client, shard: shard, hap: hap, agent: agent, cfg: cfg}
	if os.Getenv(hxDriverOff) == "" {
		e.waitPassing(t, "at start")
	}
	return e
}

// waitPassing waits until the frontend's check passes in Consul.
func (e *hxEnv) waitPassing(t *testing.T, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	if err := sandbox.Poll(ctx, "frontend check passing "+when, func(context.Context) error {
		if s := healthOf(t, e.consul, "haproxy", hxServiceID); s != api.HealthPassing {
			return errors.New(s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitServerOnMaster waits until HAProxy holds redis-rw/mymaster at the
// master a Sentinel majority names, and returns it.
func (e *hxEnv) waitServerOnMaster(ctx context.Context) (string, error) {
	var master string
	err := sandbox.Poll(ctx, "redis-rw/mymaster on the current master", func(ctx context.Context) error {
		var err error
		if master, err = e.shard.CurrentMaster(ctx); err != nil {
			return err
		}
		a, err := e.hap.ServerAddr(ctx, "redis-rw", "mymaster")
		if err != nil {
			return err
		}
		if !addr.Same(a, master) {
			return fmt.Errorf("at %s, the Sentinels name %s", a, master)
		}
		return nil
	})
	return master, err
}

// waitServerAt waits until HAProxy holds redis-rw/mymaster at want.
func (e *hxEnv) waitServerAt(ctx context.Context, want string) error {
	return sandbox.Poll(ctx, "redis-rw/mymaster at "+want, func(ctx context.Context) error {
		a, err := e.hap.ServerAddr(ctx, "redis-rw", "mymaster")
		if err != nil {
			return err
		}
		if !addr.Same(a, want) {
			return fmt.Errorf("at %s", a)
		}
		return nil
	})
}

// testValidate: `validate` names a wrong backend while HAProxy runs, and
// says that it could not check the names when the runtime API is absent.
func (e *hxEnv) testValidate(t *testing.T) {
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, backend, socket string) string {
		cfg := map[string]any{}
		for k, v := range e.cfg {
			cfg[k] = v
		}
		cfg["haproxy"] = []any{map[string]any{
			"name": "edge", "runtime_api": socket,
			"servers": []any{map[string]any{"backend": backend, "server": "mymaster", "master_name": "mymaster"}},
		}}
		b, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	validate := func(path string) (string, int) {
		cmd := exec.CommandContext(e.ctx, bin, "validate", "--config", path)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := validate(write("wrong.yml", "redis-rww", e.hap.Socket))
	t.Logf("validate, wrong backend (exit %d):\n%s", code, out)
	if code != 2 || !strings.Contains(out, `haproxy[0].servers[0]: redis-rww/mymaster: HAProxy has no backend "redis-rww"`) ||
		!strings.Contains(out, "it has: redis-ref, redis-rw") {
		t.Errorf("validate did not name the wrong backend with exit 2")
	}
	out, code = validate(write("right.yml", "redis-rw", e.hap.Socket))
	if code != 0 || !strings.Contains(out, "has every configured backend and server") {
		t.Errorf("validate of the right config: exit %d:\n%s", code, out)
	}
	out, code = validate(write("absent.yml", "redis-rww", filepath.Join(t.TempDir(), "no.sock")))
	t.Logf("validate, no HAProxy (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, "backend and server names NOT checked") {
		t.Errorf("validate without HAProxy: exit %d, want 0 and a note that the names are unchecked", code)
	}
}

// testKillMaster: kill -9 of the master; writes through HAProxy land on the
// new master; the old master returns as a master (no replicaof) and not one
// write acknowledged through the driven frontend is missing on the final
// master once Sentinel has turned it into a replica.
func (e *hxEnv) testKillMaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	old := e.shard.Master
	driven := sandbox.StartAckWriter("driven", e.hap.Frontends["redis-rw"])
	ref := sandbox.StartAckWriter("ref", e.hap.Frontends["redis-ref"])
	defer driven.Stop()
	defer ref.Stop()
	if err := driven.WaitAcked(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if err := ref.WaitAcked(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	// After Kill returned the old master is reaped: nothing it
	// acknowledges can come later.
	killed := time.Now()
	if _, err := e.shard.WaitFailover(ctx, old.Addr()); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	// Writes through HAProxy land on the new master (Sentinel, with
	// down-after 1s, sometimes fails a fresh master over again: follow
	// whatever master it names now).
	newAddr, err := e.waitServerOnMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	afterKill := func(a sandbox.Ack) bool { return a.At.After(killed) }
	first, err := driven.FirstAck(ctx, "after the kill", afterKill)
	if err != nil {
		t.Fatal(err)
	}
	if !hxExists(ctx, t, newAddr, first.Key) {
		t.Fatalf("the first write acknowledged through HAProxy after the kill (%s) is not on the new master %s", first.Key, newAddr)
	}
	refFirst, err := ref.FirstAck(ctx, "after the kill", afterKill)
	if err != nil {
		t.Fatal(err)
	}
	e.figures = append(e.figures,
		fmt.Sprintf("kill -9 -> Sentinel majority names the new master: %s", promoted.Sub(killed).Round(time.Millisecond)),
		fmt.Sprintf("kill -9 -> first write acknowledged on the new master: agent-driven %s, role-check reference %s",
			first.At.Sub(killed).Round(time.Millisecond), refFirst.At.Sub(killed).Round(time.Millisecond)))

	// The old master returns as a master, with an empty dataset and no
	// replicaof; Sentinel turns it into a replica after a few seconds.
	if err := old.Restart(); err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	if _, err := hxWaitLinked(ctx, e.shard, old); err != nil {
		t.Fatal(err)
	}
	converted := time.Now()
	// Keep writing a moment after the conversion, then count.
	if err := driven.WaitAcked(ctx, driven.Count()+50); err != nil {
		t.Fatal(err)
	}
	driven.Stop()
	ref.Stop()
	final, err := e.shard.CurrentMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lostDriven := hxMissing(ctx, t, final, driven.Keys())
	lostRef := hxMissing(ctx, t, final, ref.Keys())
	e.figures = append(e.figures,
		fmt.Sprintf("old master back as master for %s before Sentinel converted it", converted.Sub(returned).Round(time.Millisecond)),
		fmt.Sprintf("acknowledged writes missing on the final master %s: agent-driven %d of %d, role-check reference %d of %d",
			final, lostDriven, len(driven.Keys()), lostRef, len(ref.Keys())))
	if lostDriven != 0 {
		t.Errorf("%d writes acknowledged through the agent-driven HAProxy backend are missing on the final master %s", lostDriven, final)
	}
	if a, err := e.hap.ServerAddr(ctx, "redis-rw", "mymaster"); err != nil || !addr.Same(a, final) {
		t.Errorf("redis-rw/mymaster is at %s (%v), want the final master %s", a, err, final)
	}
	e.waitPassing(t, "after the failover")
	e.checkStatusAndMetrics(t, final)
	e.checkClusterAndText(t, final)
}

// checkClusterAndText reads the agent's /v1/cluster and runs the status
// command: the frontend is listed as a haproxy proxy whose server (from its
// Consul Meta) follows the final master, the failover story says when
// HAProxy moved, and the status text names the frontend and its server.
func (e *hxEnv) checkClusterAndText(t *testing.T, master string) {
	t.Helper()
	pctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	var cl status.Cluster
	if err := sandbox.Poll(pctx, "/v1/cluster shows frontend redis-rw following "+master, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.agent.URL("/v1/cluster"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		cl = status.Cluster{}
		if err := json.NewDecoder(resp.Body).Decode(&cl); err != nil {
			return err
		}
		for _, p := range cl.Proxies {
			if p.ServiceID != hxServiceID {
				continue
			}
			if p.Kind != status.ProxyHAProxy || p.Pool != "redis-rw" || p.Follows == nil || !*p.Follows || p.Status != api.HealthPassing ||
				len(p.Servers) != 1 || p.Servers[0].Name != "redis-rw/mymaster" || !addr.Same(p.Servers[0].Addr, master) {
				return fmt.Errorf("frontend in /v1/cluster: %+v", p)
			}
			return nil
		}
		return fmt.Errorf("no %s among the proxies of /v1/cluster: %+v", hxServiceID, cl.Proxies)
	}); err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, f := range cl.Failovers {
		if f.HAProxyAt.IsZero() {
			continue
		}
		for _, a := range f.Actions {
			if a.What == "HAProxy moved to "+f.To && a.At.Equal(f.HAProxyAt) {
				moved++
				e.figures = append(e.figures, fmt.Sprintf("failover story %s -> %s: HAProxy moved %s after the agent learnt it (gap %s)",
					f.From, f.To, f.HAProxyAt.Sub(f.At).Round(time.Microsecond), f.Gap.Round(time.Millisecond)))
			}
		}
	}
	if moved == 0 {
		t.Errorf("no failover story of /v1/cluster tells when HAProxy moved: %+v", cl.Failovers)
	}
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	hostport := strings.TrimSuffix(strings.TrimPrefix(e.agent.URL("/"), "http://"), "/")
	out, err := exec.CommandContext(e.ctx, bin, "status", "--http-addr", hostport).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{
		"haproxy  redis-rw", // KIND POOL of the PROXIES table
		"redis-rw/mymaster -> " + master,
		"HAPROXY DRIVEN HERE",
		hxServiceID,
		"HAProxy moved to ",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the status text lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("status:\n%s", out)
	}
}

// checkStatusAndMetrics reads the agent's /v1/status and /metrics: the
// server matches the master, the move is recorded, the runtime API is up.
func (e *hxEnv) checkStatusAndMetrics(t *testing.T, master string) {
	t.Helper()
	var snap status.Snapshot
	if err := sandbox.Poll(e.ctx, "/v1/status shows redis-rw/mymaster on "+master, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.agent.URL("/v1/status"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		snap = status.Snapshot{}
		if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
			return err
		}
		if len(snap.HAProxy) != 1 || len(snap.HAProxy[0].Servers) != 1 {
			return fmt.Errorf("haproxy in /v1/status: %+v", snap.HAProxy)
		}
		h := snap.HAProxy[0]
		if s := h.Servers[0]; !h.Reachable || !s.Matches || !addr.Same(s.Addr, master) || h.Moves < 1 || h.LastMove == nil {
			return fmt.Errorf("haproxy in /v1/status: %+v", h)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := snap.HAProxy[0].LastMove
	e.figures = append(e.figures, fmt.Sprintf("/v1/status last move: %s %s -> %s, %s after the agent learnt the master", m.Server, m.From, m.To, m.Reaction))
	resp, err := http.Get(e.agent.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`redis_consul_agent_haproxy_up{haproxy="edge"} 1`,
		`redis_consul_agent_haproxy_servers_mismatched{haproxy="edge"} 0`,
		`redis_consul_agent_haproxy_check_status{service_id="` + hxServiceID + `",status="passing"} 1`,
		`redis_consul_agent_haproxy_server_moves_total{backend="redis-rw",haproxy="edge",server="mymaster"}`,
		`redis_consul_agent_proxy_server_follows{kind="haproxy",pool="redis-rw",proxy="edge",server="mymaster"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// testPlannedFailover: SENTINEL FAILOVER with a writer through HAProxy.
// Until the agent pauses writes on the outgoing master, some acknowledged
// writes may be lost: the count is reported, the final state asserted.
func (e *hxEnv) testPlannedFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	old, err := e.shard.CurrentMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Every replica linked first, or Sentinel may pick one still syncing
	// and abort the failover.
	for _, n := range e.shard.Nodes() {
		if !addr.Same(n.Addr(), old) {
			if _, err := hxWaitLinked(ctx, e.shard, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	driven := sandbox.StartAckWriter("planned", e.hap.Frontends["redis-rw"])
	defer driven.Stop()
	if err := driven.WaitAcked(ctx, 100); err != nil {
		t.Fatal(err)
	}
	_, started, err := hxFailover(ctx, t, e.shard, old)
	if err != nil {
		t.Fatal(err)
	}
	newAddr, err := e.waitServerOnMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	if n := e.shard.Node(old); n != nil {
		if newAddr, err = hxWaitLinked(ctx, e.shard, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := driven.WaitAcked(ctx, driven.Count()+50); err != nil {
		t.Fatal(err)
	}
	driven.Stop()
	lost := hxMissing(ctx, t, newAddr, driven.Keys())
	e.figures = append(e.figures,
		fmt.Sprintf("SENTINEL FAILOVER -> HAProxy server moved: %s", moved.Sub(started).Round(time.Millisecond)),
		fmt.Sprintf("SENTINEL FAILOVER: acknowledged writes missing on the new master: %d of %d (no planned-failover pause yet)",
			lost, len(driven.Keys())))
	e.waitPassing(t, "after the planned failover")
}

// testRestart: HAProxy restarted with its original config points the
// server at the first master again (a replica since the kill-master step);
// the agent puts it right within one reconcile interval and cuts the
// sessions a client opened to the replica meanwhile.
func (e *hxEnv) testRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	cur, err := e.shard.CurrentMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if addr.Same(cur, e.shard.Master.Addr()) {
		t.Fatalf("the master is the configured address %s again; the restart would show nothing", cur)
	}
	if err := e.hap.Restart(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	// A client that connects now reaches the old address, a replica, and
	// keeps its connection: once the agent moved the server it must cut
	// it (shutdown sessions), or the client keeps getting READONLY.
	held, err := net.DialTimeout("tcp", e.hap.Frontends["redis-rw"], time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	onReplica := hxSet(held) == "-READONLY"
	if !onReplica {
		t.Logf("the agent moved the server before the first client connected; the session cut is not shown this run")
	}
	wctx, wcancel := context.WithTimeout(ctx, hxReconcile+2*time.Second)
	defer wcancel()
	if err := e.waitServerAt(wctx, cur); err != nil {
		t.Fatalf("not reconciled within the reconcile interval %s (+2s): %v", hxReconcile, err)
	}
	took := time.Since(up)
	if onReplica {
		if err := sandbox.Poll(ctx, "the session to the replica cut", func(context.Context) error {
			if r := hxSet(held); strings.HasPrefix(r, "-") || r == "+OK" {
				return fmt.Errorf("the held connection still answers SET with %q", r)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	e.figures = append(e.figures, fmt.Sprintf("HAProxy restarted with its original config -> server back on the master: %s (reconcile %s)",
		took.Round(time.Millisecond), hxReconcile))
	if took > hxReconcile+500*time.Millisecond {
		t.Errorf("reconciled after %s, more than one reconcile interval %s (+500ms)", took, hxReconcile)
	}
	e.waitPassing(t, "after the HAProxy restart")
}

// testReload: a SIGHUP with the frontend renamed restarts only that
// driver: the old registration goes, the new one passes.
func (e *hxEnv) testReload(t *testing.T) {
	if os.Getenv(hxDriverOff) != "" {
		t.Skip("the agent runs without its haproxy section")
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	cfg := map[string]any{}
	for k, v := range e.cfg {
		cfg[k] = v
	}
	entry := map[string]any{}
	for k, v := range e.cfg["haproxy"].([]any)[0].(map[string]any) {
		entry[k] = v
	}
	entry["frontends"] = []any{map[string]any{"name": "writes", "address": e.hap.Frontends["redis-rw"]}}
	cfg["haproxy"] = []any{entry}
	if err := e.agent.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Poll(ctx, "the renamed frontend registered and the old one gone", func(context.Context) error {
		if s := healthOf(t, e.consul, "haproxy", hxServiceID); s != "absent" {
			return fmt.Errorf("%s is %s", hxServiceID, s)
		}
		if s := healthOf(t, e.consul, "haproxy", "haproxy-hx-1-edge-writes"); s != api.HealthPassing {
			return fmt.Errorf("haproxy-hx-1-edge-writes is %s", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHAProxyDeploySample checks the samples in deploy/haproxy: real
// HAProxy accepts the haproxy.cfg (`haproxy -c`), the agent config is valid
// but for the secret files of the host it is meant for, and every server it
// follows is a server of that backend in the haproxy.cfg.
func TestHAProxyDeploySample(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "deploy", "haproxy")
	bin, err := sandbox.Binary("haproxy")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", filepath.Join(dir, "haproxy.cfg")).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejects the sample: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "agent.yml"))
	if err != nil {
		t.Fatal(err)
	}
	c, probs := config.Parse(raw)
	if c == nil || len(probs) > 0 {
		t.Fatalf("agent.yml: %v", probs)
	}
	for _, p := range c.Finish() {
		if !strings.Contains(p, "cannot read") {
			t.Errorf("agent.yml: %s", p)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]bool{} // backend/server
	backend := ""
	for _, line := range strings.Split(string(cfg), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "backend":
			backend = f[1]
		case len(f) >= 2 && f[0] == "server" && backend != "":
			servers[backend+"/"+f[1]] = true
		case len(f) > 0 && (f[0] == "frontend" || f[0] == "listen" || f[0] == "defaults" || f[0] == "global"):
			backend = ""
		}
	}
	for _, h := range c.HAProxy {
		for _, s := range h.Servers {
			if !servers[s.Backend+"/"+s.Server] {
				t.Errorf("agent.yml follows %s/%s, which haproxy.cfg does not have (it has %v)", s.Backend, s.Server, servers)
			}
		}
	}
}
