package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// opsStack is the sandbox the ops tests look at: one Consul, one shard of
// three Redis watched by three Sentinels, a twemproxy pool in front of it,
// and one agent that registers all of them and supervises the twemproxy,
// so its dashboard's failover timeline has both the Consul and the
// twemproxy reaction.
type opsStack struct {
	c      *sandbox.Cluster
	consul *sandbox.Consul
	shard  *sandbox.Shard
	agent  *sandbox.Agent
	bin    string // the agent binary
	url    string // http://host:port of the agent's status API
	pool   string // the twemproxy pool's listen address
}

// startOpsStack starts everything and waits until the agent's cluster view
// shows the shard healthy with the harness's master.
func startOpsStack(t *testing.T, ctx context.Context) *opsStack {
	t.Helper()
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	st := &opsStack{bin: bin}
	st.c = harness.ForTest(t, sandbox.Options{})
	if st.consul, err = st.c.StartConsul(sandbox.ConsulOptions{}); err != nil {
		t.Fatal(err)
	}
	if st.shard, err = st.c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2, Sentinels: 3, Quorum: 2}); err != nil {
		t.Fatal(err)
	}

	// twemproxy's host: the pool and the agent's HTTP API listen there.
	ip := st.c.NewIP()
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = st.c.FreePort(ip); err != nil {
			t.Fatal(err)
		}
	}
	st.pool = fmt.Sprintf("%s:%d", ip, ports[0])
	dir, err := st.c.ProcessDir("nutcracker-main")
	if err != nil {
		t.Fatal(err)
	}
	nutConf := filepath.Join(dir, "nutcracker.yml")
	pool := fmt.Sprintf("shop:\n  listen: %s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  auto_eject_hosts: false\n  timeout: 400\n  servers:\n    - %s:1 mymaster\n",
		st.pool, st.shard.Master.Addr())
	if err := os.WriteFile(nutConf, []byte(pool), 0o644); err != nil {
		t.Fatal(err)
	}
	nut, err := sandbox.Binary("nutcracker")
	if err != nil {
		t.Fatal(err)
	}
	var sentinels []string
	var localSentinels, redis []any
	for _, s := range st.shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
		localSentinels = append(localSentinels, map[string]any{"address": s.Addr()})
	}
	for _, r := range st.shard.Nodes() {
		redis = append(redis, map[string]any{"address": r.Addr(), "master_name": st.shard.Name})
	}
	cfg := map[string]any{
		"node_name": "ops-host",
		"consul":    map[string]any{"address": st.consul.HTTPAddr()},
		"sentinel":  map[string]any{"addresses": sentinels},
		"redis":     redis,
		"sentinels": localSentinels,
		"twemproxy": []any{map[string]any{
			"name": "main", "config_file": nutConf, "nutcracker": nut,
			"restart": map[string]any{"mode": "supervise", "command": []string{nut, "-c", nutConf, "-s", fmt.Sprint(ports[1]), "-a", ip}},
		}},
		"log": map[string]any{"level": "debug"},
	}
	agent, err := st.c.StartAgent(st.bin, "agent", ip, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st.agent, st.url = agent, agent.URL("")
	master := st.shard.Master.Addr()
	if err := opsPoll(ctx, "the agent's cluster view to show "+master+" as the healthy master and pool shop passing", func(ctx context.Context) error {
		c, err := st.cluster(ctx)
		if err != nil {
			return err
		}
		sh, err := st.shardOf(c)
		if err != nil {
			return err
		}
		if sh.Verdict != status.VerdictOK || len(sh.Masters) != 1 || sh.Masters[0].Addr != master {
			return fmt.Errorf("shard = %s, masters %v, problems %q", sh.Verdict, nodeAddrs(sh.Masters), sh.Problems)
		}
		if len(c.Proxies) != 1 || c.Proxies[0].Pool != "shop" || c.Proxies[0].Status != "passing" {
			return fmt.Errorf("proxies = %+v", c.Proxies)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return st
}

// cluster is the agent's /v1/cluster; a Consul error is an error.
func (st *opsStack) cluster(ctx context.Context) (status.Cluster, error) {
	var c status.Cluster
	if err := opsGetJSON(ctx, st.url+"/v1/cluster", &c); err != nil {
		return c, err
	}
	if c.Error != "" {
		return c, fmt.Errorf("cluster error: %s", c.Error)
	}
	return c, nil
}

// shardOf picks the stack's shard out of a cluster view.
func (st *opsStack) shardOf(c status.Cluster) (status.Shard, error) {
	for _, s := range c.Shards {
		if s.Name == st.shard.Name {
			return s, nil
		}
	}
	return status.Shard{}, fmt.Errorf("no shard %s in /v1/cluster (%d shards)", st.shard.Name, len(c.Shards))
}

// shardView is the agent's /v1/cluster entry for the shard.
func (st *opsStack) shardView(ctx context.Context) (status.Shard, error) {
	c, err := st.cluster(ctx)
	if err != nil {
		return status.Shard{}, err
	}
	return st.shardOf(c)
}

// failover kills the master with SIGKILL and returns the new master once
// Sentinel has promoted one.
func (st *opsStack) failover(t *testing.T, ctx context.Context) (oldAddr, newAddr string) {
	t.Helper()
	oldAddr, err := st.shard.CurrentMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := st.shard.Node(oldAddr)
	if node == nil {
		t.Fatalf("no node at %s", oldAddr)
	}
	if err := node.Kill(); err != nil {
		t.Fatal(err)
	}
	if newAddr, err = st.shard.WaitFailover(ctx, oldAddr); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover: %s -> %s", oldAddr, newAddr)
	return oldAddr, newAddr
}

// waitTimeline waits until the agent's journal holds the failover to
// newAddr applied to both Consul and twemproxy.
func (st *opsStack) waitTimeline(t *testing.T, ctx context.Context, newAddr string) status.Snapshot {
	t.Helper()
	var snap status.Snapshot
	if err := opsPoll(ctx, "a failover to "+newAddr+" applied to Consul and twemproxy in /v1/status", func(ctx context.Context) error {
		if err := opsGetJSON(ctx, st.url+"/v1/status", &snap); err != nil {
			return err
		}
		for _, f := range snap.Failovers {
			if f.Master == st.shard.Name && f.To == newAddr {
				if f.ConsulAt.IsZero() || f.TwemproxyAt.IsZero() {
					return fmt.Errorf("failover seen, applied to consul at %v, twemproxy at %v", f.ConsulAt, f.TwemproxyAt)
				}
				return nil
			}
		}
		return fmt.Errorf("failovers: %+v", snap.Failovers)
	}); err != nil {
		t.Fatal(err)
	}
	return snap
}

// opsPoll is sandbox.Poll that reports the last real failure, not the
// context error of the attempt the deadline cut short.
func opsPoll(ctx context.Context, what string, f func(ctx context.Context) error) error {
	var last error
	err := sandbox.Poll(ctx, what, func(ctx context.Context) error {
		err := f(ctx)
		if err != nil && ctx.Err() == nil {
			last = err
		}
		return err
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w; last failure before that: %v", err, last)
	}
	return err
}

func nodeAddrs(ns []status.ClusterNode) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Addr+"("+n.Status+")")
	}
	return out
}

func opsGet(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}

func opsGetJSON(ctx context.Context, url string, v any) error {
	b, err := opsGet(ctx, url)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// scrape fetches /metrics, fails the test on any promlint problem and
// returns the parsed families.
func (st *opsStack) scrape(t *testing.T, ctx context.Context) map[string]*dto.MetricFamily {
	t.Helper()
	body, err := opsGet(ctx, st.url+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue sums the samples of family name whose labels include want:
// the counter or gauge value, or a histogram's sample count.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

// seriesName prints name{k="v",...} for messages.
func seriesName(name string, labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

// opsSeries are the series issue 5 asks /metrics to carry, by family and
// labels; each must be present from the start (label sets known up front
// are initialised by the agent, so dashboards and alerts see 0, not nothing).
func opsSeries(shard, proxy string) []struct {
	name   string
	labels map[string]string
} {
	type s = struct {
		name   string
		labels map[string]string
	}
	return []s{
		{"redis_consul_agent_build_info", nil},
		{"redis_consul_agent_redis_role", map[string]string{"master_name": shard, "role": "master"}},
		{"redis_consul_agent_consul_check_status", map[string]string{"status": "passing"}},
		{"redis_consul_agent_sentinel_up", nil},
		{"redis_consul_agent_sentinel_events_total", nil},
		{"redis_consul_agent_failovers_total", map[string]string{"master_name": shard}},
		{"redis_consul_agent_consul_writes_total", map[string]string{"op": "register"}},
		{"redis_consul_agent_consul_write_failures_total", nil},
		{"redis_consul_agent_reaction_seconds", map[string]string{"target": "consul"}},
		{"redis_consul_agent_reaction_seconds", map[string]string{"target": "twemproxy"}},
		{"redis_consul_agent_twemproxy_restarts_total", map[string]string{"proxy": proxy}},
		{"redis_consul_agent_twemproxy_rollbacks_total", map[string]string{"proxy": proxy}},
		{"redis_consul_agent_twemproxy_restart_duration_seconds", map[string]string{"proxy": proxy}},
		{"go_goroutines", nil},
		{"process_resident_memory_bytes", nil},
	}
}

// TestOpsMetricsAndStatus runs the real agent beside a real shard and
// twemproxy, then checks the operator surface: /metrics lints clean and
// carries every series, /v1/status and /v1/cluster tell the truth, the
// `status` command prints it, and a failover moves the counters and
// histograms.
func TestOpsMetricsAndStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	st := startOpsStack(t, ctx)
	t.Logf("stack up in %s", time.Since(start).Round(time.Millisecond))

	if b, err := opsGet(ctx, st.url+"/healthz"); err != nil || strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("/healthz = %q, %v", b, err)
	}

	before := st.scrape(t, ctx)
	for _, s := range opsSeries(st.shard.Name, "main") {
		if _, ok := metricValue(before, s.name, s.labels); !ok {
			t.Errorf("/metrics lacks %s", seriesName(s.name, s.labels))
		}
	}

	var snap status.Snapshot
	if err := opsGetJSON(ctx, st.url+"/v1/status", &snap); err != nil {
		t.Fatal(err)
	}
	if snap.Node != "ops-host" || len(snap.Instances) != 3 || len(snap.LocalSentinels) != 3 || len(snap.Sentinels) != 3 || len(snap.Proxies) != 1 {
		t.Errorf("/v1/status: node %q, %d instances, %d local sentinels, %d sentinels, %d proxies",
			snap.Node, len(snap.Instances), len(snap.LocalSentinels), len(snap.Sentinels), len(snap.Proxies))
	}
	masters := 0
	for _, in := range snap.Instances {
		if in.Role == "master" {
			masters++
			if in.Announce != st.shard.Master.Addr() && in.Address != st.shard.Master.Addr() {
				t.Errorf("master instance is %s, want %s", in.Address, st.shard.Master.Addr())
			}
		}
		if in.Status == "" || in.Why == "" {
			t.Errorf("instance %s has no check status or reason: %+v", in.ServiceID, in)
		}
	}
	if masters != 1 {
		t.Errorf("%d local instances are master, want 1", masters)
	}
	if len(snap.Masters) != 1 || snap.Masters[0].Addr != st.shard.Master.Addr() || snap.Masters[0].Agree != 3 {
		t.Errorf("masters map = %+v", snap.Masters)
	}
	for _, s := range snap.Sentinels {
		if !s.Up || s.View[st.shard.Name] != st.shard.Master.Addr() {
			t.Errorf("sentinel %s: up %v, view %v", s.Address, s.Up, s.View)
		}
	}
	if len(snap.Proxies) == 1 {
		p := snap.Proxies[0]
		if p.ConfigHash == "" || len(p.Pools) != 1 || len(p.Pools[0].Servers) != 1 || !p.Pools[0].Servers[0].Matches {
			t.Errorf("proxy = %+v", p)
		}
	}

	// The status command prints the same picture.
	out, err := exec.CommandContext(ctx, st.bin, "status", "--http-addr", strings.TrimPrefix(st.url, "http://")).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"SHARDS", st.shard.Name, st.shard.Master.Addr(), "3/3 agree", "TWEMPROXY MANAGED HERE"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.CommandContext(ctx, st.bin, "status", "--json", "--http-addr", st.url).Output()
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	var report struct {
		Status  status.Snapshot `json:"status"`
		Cluster status.Cluster  `json:"cluster"`
	}
	if err := json.Unmarshal(out, &report); err != nil || report.Status.Node != "ops-host" || len(report.Cluster.Shards) != 1 {
		t.Errorf("status --json: %v: node %q, %d shards", err, report.Status.Node, len(report.Cluster.Shards))
	}

	failStart := time.Now()
	_, newAddr := st.failover(t, ctx)
	st.waitTimeline(t, ctx, newAddr)
	if err := opsPoll(ctx, "the cluster view to show "+newAddr+" as the only master", func(ctx context.Context) error {
		sh, err := st.shardView(ctx)
		if err != nil {
			return err
		}
		if len(sh.Masters) != 1 || sh.Masters[0].Addr != newAddr {
			return fmt.Errorf("masters %v", nodeAddrs(sh.Masters))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover seen end to end in %s", time.Since(failStart).Round(time.Millisecond))

	after := st.scrape(t, ctx)
	for _, m := range []struct {
		name   string
		labels map[string]string
	}{
		{"redis_consul_agent_failovers_total", map[string]string{"master_name": st.shard.Name}},
		{"redis_consul_agent_sentinel_events_total", map[string]string{"type": "+switch-master"}},
		{"redis_consul_agent_reaction_seconds", map[string]string{"target": "consul"}},
		{"redis_consul_agent_reaction_seconds", map[string]string{"target": "twemproxy"}},
		{"redis_consul_agent_twemproxy_restarts_total", map[string]string{"proxy": "main"}},
		{"redis_consul_agent_twemproxy_restart_duration_seconds", map[string]string{"proxy": "main"}},
		{"redis_consul_agent_consul_writes_total", nil},
	} {
		b, _ := metricValue(before, m.name, m.labels)
		a, ok := metricValue(after, m.name, m.labels)
		if !ok || a <= b {
			t.Errorf("%s did not move with the failover: %v -> %v", seriesName(m.name, m.labels), b, a)
		}
	}
	if v, _ := metricValue(after, "redis_consul_agent_redis_role", map[string]string{"role": "master"}); v != 1 {
		t.Errorf("redis_role{role=master} sums to %v after the failover, want 1", v)
	}
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
