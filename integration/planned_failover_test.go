package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The zero-loss planned failover: the agent beside the outgoing master
// pauses its writes while Sentinel fails it over (discovery/decide_pause.go).
// The helpers of this file start with "pf".

// pfSlice is the agents' failover.pause_slice in these tests (the default).
const pfSlice = 300 * time.Millisecond

// pfEnv is one shard with an agent beside each Redis and a twemproxy host
// whose agent supervises nutcracker.
type pfEnv struct {
	c      *sandbox.Cluster
	consul *sandbox.Consul
	shard  *sandbox.Shard
	agents map[string]*sandbox.Agent // by Redis address
	pool   string                    // the nutcracker pool's listen address
	conf   string                    // the nutcracker config file the proxy host's agent manages
	proxy  *sandbox.Agent            // the proxy host's agent
	byIP   map[string]string         // Redis IP → its address
}

// newPFEnv starts the stack; failover is the agents' failover section and
// redisAuth, when set, the redis entry's username and password_file.
func newPFEnv(t *testing.T, ctx context.Context, failover map[string]any, so sandbox.ShardOptions, redisAuth map[string]any) *pfEnv {
	t.Helper()
	return newPFEnvNut(t, ctx, failover, so, redisAuth, "")
}

// newPFEnvNut is newPFEnv whose proxy host's agent runs nut as nutcracker
// (empty: the installed one).
func newPFEnvNut(t *testing.T, ctx context.Context, failover map[string]any, so sandbox.ShardOptions, redisAuth map[string]any, nut string) *pfEnv {
	t.Helper()
	c := harness.ForTest(t, sandbox.Options{})
	consul, err := c.StartConsul(sandbox.ConsulOptions{})
	if err != nil {
		t.Fatal(err)
	}
	so.Name, so.Replicas = "mymaster", 2
	shard, err := c.StartShard(so)
	if err != nil {
		t.Fatal(err)
	}
	e := &pfEnv{c: c, consul: consul, shard: shard, agents: map[string]*sandbox.Agent{}, byIP: map[string]string{}}
	for _, r := range shard.Nodes() {
		e.byIP[r.IP()] = r.Addr()
		cfg := agentConfig(consul, shard, r, r.Name())
		cfg["failover"] = failover
		for k, v := range redisAuth {
			cfg["redis"].([]any)[0].(map[string]any)[k] = v
		}
		if e.agents[r.Addr()], err = c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	e.pool = e.startProxy(t, failover, nut)
	if err := sandbox.Poll(ctx, "DNS and twemproxy at the master", func(ctx context.Context) error {
		if a, err := e.dnsMaster(ctx); err != nil || a != shard.Master.Addr() {
			return fmt.Errorf("DNS master %q (%v)", a, err)
		}
		_, err := sandbox.Do(ctx, e.pool, "SET", "pf-ready", "1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// startProxy starts the twemproxy host and returns the pool's address.
func (e *pfEnv) startProxy(t *testing.T, failover map[string]any, nut string) string {
	t.Helper()
	ip := e.c.NewIP()
	listen, err := e.c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := e.c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := e.c.ProcessDir("nutcracker-pf")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nutcracker.yml")
	e.conf = conf
	pool := fmt.Sprintf("shop:\n  listen: %s:%d\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  auto_eject_hosts: false\n  timeout: 400\n  servers:\n    - %s:1 %s\n",
		ip, listen, e.shard.Master.Addr(), e.shard.Name)
	if err := os.WriteFile(conf, []byte(pool), 0o644); err != nil {
		t.Fatal(err)
	}
	if nut == "" {
		if nut, err = sandbox.Binary("nutcracker"); err != nil {
			t.Fatal(err)
		}
	}
	var sentinels []string
	for _, s := range e.shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	if e.proxy, err = e.c.StartAgent("", "agent-proxy-host", ip, map[string]any{
		"node_name": "proxy-host",
		"log":       map[string]any{"level": "debug"},
		"consul":    map[string]any{"address": e.consul.HTTPAddr()},
		"sentinel":  map[string]any{"addresses": sentinels},
		"failover":  failover,
		"twemproxy": []any{map[string]any{
			"name": "main", "config_file": conf, "nutcracker": nut,
			"restart": map[string]any{"mode": "supervise", "command": []string{nut, "-c", conf, "-s", fmt.Sprint(stats), "-a", ip}},
		}},
	}); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", ip, listen)
}

// dnsMaster is the one Redis Consul DNS answers for <name>-master; two
// answers are an error.
func (e *pfEnv) dnsMaster(ctx context.Context) (string, error) {
	ips, err := e.consul.LookupA(ctx, e.shard.Name+"-master.redis.service.consul")
	switch {
	case err != nil:
		return "", err
	case len(ips) == 0:
		return "", errors.New("no master in DNS")
	case len(ips) > 1:
		return "", &pfTwoMasters{ips}
	}
	return e.byIP[ips[0]], nil
}

type pfTwoMasters struct{ ips []string }

func (e *pfTwoMasters) Error() string { return "DNS answers two masters: " + strings.Join(e.ips, ", ") }

// pfWriter loops unique SETs at target and records the acknowledged keys.
type pfWriter struct {
	name   string
	target func(ctx context.Context) (string, error)

	mu         sync.Mutex
	acked      []string
	errs       int
	twoMasters []string
}

func (w *pfWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// run writes until ctx ends (at most 200000 writes), 1 ms apart.
func (w *pfWriter) run(ctx context.Context) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 200000 && ctx.Err() == nil; i++ {
		key := fmt.Sprintf("pf-%s-%06d", w.name, i)
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		addr, err := w.target(wctx)
		var v any
		if err == nil {
			v, err = sandbox.Do(wctx, addr, "SET", key, "1")
		}
		cancel()
		w.mu.Lock()
		var two *pfTwoMasters
		switch {
		case errors.As(err, &two):
			w.twoMasters = append(w.twoMasters, two.Error())
		case err == nil && v == "OK":
			w.acked = append(w.acked, key)
		default:
			w.errs++
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// lost returns how many acknowledged keys of w the Redis at addr lacks.
func pfLost(ctx context.Context, addr string, keys []string) (int, error) {
	cl := sandbox.NewClient(addr, "")
	defer cl.Close()
	lost := 0
	for start := 0; start < len(keys); start += 500 {
		batch := keys[start:min(start+500, len(keys))]
		pipe := cl.Pipeline()
		cmds := make([]interface{ Val() int64 }, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.Exists(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, err
		}
		for _, c := range cmds {
			if c.Val() == 0 {
				lost++
			}
		}
	}
	return lost, nil
}

// waitAcks waits until every writer has n more acknowledged writes than base.
func pfWaitAcks(ctx context.Context, t *testing.T, ws []*pfWriter, n int, what string) {
	t.Helper()
	base := make([]int, len(ws))
	for i, w := range ws {
		base[i] = w.count()
	}
	if err := sandbox.Poll(ctx, what, func(context.Context) error {
		for i, w := range ws {
			if got := w.count() - base[i]; got < n {
				return fmt.Errorf("writer %s: %d new acknowledged writes", w.name, got)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// pfGet returns the body of the agent's path.
func pfGet(ctx context.Context, a *sandbox.Agent, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL(path), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestPlannedFailoverLosesNoAcknowledgedWrite: SENTINEL FAILOVER while two
// writers loop unique SETs, one through the agent's twemproxy and one
// through the DNS name (resolved per write). With the pause every
// acknowledged key is on the final master; without it, writes are lost,
// which shows the test can fail.
func TestPlannedFailoverLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	t.Run("pause", func(t *testing.T) {
		lost := pfRunPlanned(t, true)
		for name, n := range lost {
			if n != 0 {
				t.Errorf("%s: %d acknowledged writes lost with the write pause on", name, n)
			}
		}
	})
	t.Run("no-pause", func(t *testing.T) {
		lost := pfRunPlanned(t, false)
		if lost["twemproxy"]+lost["dns"] == 0 {
			t.Errorf("no acknowledged write lost without the pause: the test cannot tell the pause works")
		}
	})
}

// pfRunPlanned runs one planned failover under load and returns the lost
// acknowledged writes by path.
func pfRunPlanned(t *testing.T, pause bool) map[string]int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newPFEnv(t, ctx, map[string]any{"act_on": "promotion", "pause_writes": pause}, sandbox.ShardOptions{}, nil)
	old := e.shard.Master
	ws := []*pfWriter{
		{name: "twemproxy", target: func(context.Context) (string, error) { return e.pool, nil }},
		{name: "dns", target: e.dnsMaster},
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(wctx) }()
	}
	defer func() { stop(); wg.Wait() }()
	pfWaitAcks(ctx, t, ws, 100, "writes before the failover")

	started := time.Now()
	if _, err := sandbox.Do(ctx, e.shard.Sentinels[0].Addr(), "SENTINEL", "FAILOVER", e.shard.Name); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	newAddr, err := e.shard.WaitFailover(ctx, old.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := old.WaitReplicaLinked(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover %s → %s; the old master is a linked replica %s after SENTINEL FAILOVER", old.Addr(), newAddr, time.Since(started).Round(time.Millisecond))
	// The old master's config file says whose replica it is, so that a
	// restart does not bring it back a master: Sentinel rewrites it when it
	// reconfigures the node; with the pause the agent ran REPLICAOF, and
	// saves it itself.
	nh, np, _ := net.SplitHostPort(newAddr)
	cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
	defer ccancel()
	if err := sandbox.Poll(cctx, "replicaof in the old master's redis.conf", func(context.Context) error {
		b, err := os.ReadFile(filepath.Join(old.Dir(), "redis.conf"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "replicaof "+nh+" "+np) {
			return fmt.Errorf("no %q line", "replicaof "+nh+" "+np)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	pfWaitAcks(ctx, t, ws, 100, "writes on the new master through both paths")
	stop()
	wg.Wait()

	lost := map[string]int{}
	for _, w := range ws {
		n, err := pfLost(ctx, newAddr, w.acked)
		if err != nil {
			t.Fatal(err)
		}
		lost[w.name] = n
		t.Logf("pause_writes=%v %s: %d acknowledged, %d errors, %d acknowledged writes lost", pause, w.name, len(w.acked), w.errs, n)
		if len(w.twoMasters) > 0 {
			t.Errorf("%s: %d times %s", w.name, len(w.twoMasters), w.twoMasters[0])
		}
	}
	st, err := pfGet(ctx, e.agents[old.Addr()], "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	if i := strings.Index(st, "lifted after "); i >= 0 {
		t.Logf("the old master's journal: %s", st[i:min(len(st), i+60)])
	}
	if got := strings.Contains(st, `"write-pause"`) && strings.Contains(st, `"write-unpause"`); got != pause {
		t.Errorf("the old master's journal shows write-pause and write-unpause: %v, want %v", got, pause)
	}
	if pause {
		m, err := pfGet(ctx, e.agents[old.Addr()], "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(m, "redis_consul_agent_write_pauses_total{") || !strings.Contains(m, "redis_consul_agent_write_pause_active{") {
			t.Errorf("/metrics lacks the write pause series")
		}
	}
	return lost
}
