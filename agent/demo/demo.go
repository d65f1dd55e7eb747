// Package demo brings up a sandbox stack on loopback — one Consul, one shard
// of three Redis, three Sentinels, a twemproxy and the agents beside them —
// so a person can watch the agent follow a failover. It reuses the
// integration harness, so the demo runs exactly what the tests run.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// Options configure the demo.
type Options struct {
	// Agent is the redis-consul-agent binary to run for each host.
	Agent string
	// Dir holds every process' files and is kept; empty means a new temp dir
	// (rca-demo-*), removed on every way out of Run.
	Dir string
	// Out receives the guide for the person running the demo. Write errors
	// are ignored: a reader that went away does not stop the demo or its
	// cleanup.
	Out io.Writer
	// Ready, when set, receives the running stack instead of the demo
	// waiting; tests use it.
	Ready func(*Stack)
}

// Stack is the running demo.
type Stack struct {
	Consul    *sandbox.Consul
	Shard     *sandbox.Shard
	Agents    []*sandbox.Process
	Dashboard string // http://host:port/
	Proxy     string // host:port of the twemproxy pool
	// Dir holds every process' files.
	Dir string
	// Fallbacks says, for each well-known address that was taken, what the
	// demo used instead (also printed in the guide).
	Fallbacks []string
}

// Run starts the stack, prints the guide and blocks until ctx is done. Every
// way out — ctx done, a failed start, a panic — goes through the one deferred
// teardown: the agents stop (and deregister), every process is killed, and a
// temp dir Run created is removed.
func Run(ctx context.Context, o Options) (err error) {
	start := time.Now()
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	dir := o.Dir
	if dir == "" {
		d, remove, err := newDir(out)
		if err != nil {
			return err
		}
		defer remove()
		dir = d
	}
	if err := sandbox.CheckBinaries(); err != nil {
		return err
	}
	c, err := sandbox.New(sandbox.Options{Dir: dir, StartTimeout: 60 * time.Second, StopTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	st := &Stack{Dir: dir}
	defer func() {
		if err != nil {
			c.DumpLogs(out)
		}
		fmt.Fprintln(out, "\nstopping: the agents deregister, then every process is stopped")
		stopAll(st.Agents)
		_ = c.Close()
	}()
	if err := startStack(c, o, st, out, start); err != nil {
		return err
	}
	guide(out, st, consulCommand(), commandPath(o.Agent), time.Since(start))
	if o.Ready != nil {
		o.Ready(st)
		return nil
	}
	<-ctx.Done()
	return nil
}

// startStack starts Consul, the shard and the agents, printing each step with its
// time.
func startStack(c *sandbox.Cluster, o Options, st *Stack, out io.Writer, t0 time.Time) error {
	agentIP, proxyIP := c.NewIP(), c.NewIP()
	a, err := chooseAddrs(c, agentIP, proxyIP)
	if err != nil {
		return err
	}
	st.Fallbacks = a.fallbacks
	err = step(out, t0, "Consul on "+WellKnownIP, func() (err error) {
		st.Consul, err = c.StartConsul(sandbox.ConsulOptions{Name: "consul-demo", IP: WellKnownIP, HTTPPort: a.consulHTTP, DNSPort: a.consulDNS})
		return err
	})
	if err != nil {
		return err
	}
	err = step(out, t0, "3 Redis and 3 Sentinels", func() (err error) {
		st.Shard, err = c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2, Sentinels: 3, Quorum: 2, DownAfter: 2 * time.Second, FailoverTimeout: 6 * time.Second})
		return err
	})
	if err != nil {
		return err
	}
	return step(out, t0, "4 agents and twemproxy", func() error { return startAgents(c, o, st, a, proxyIP) })
}

// step runs f between a line that says what starts and one with its time.
func step(out io.Writer, t0 time.Time, what string, f func() error) error {
	fmt.Fprintf(out, "starting %s ...\n", what)
	s := time.Now()
	if err := f(); err != nil {
		return err
	}
	fmt.Fprintf(out, "  %s ready in %.1fs (%.1fs since start)\n", what, time.Since(s).Seconds(), time.Since(t0).Seconds())
	return nil
}

// startAgents starts one agent per Redis host (registering its Redis and its
// Sentinel; the first serves the dashboard) and the twemproxy host, where the
// agent supervises nutcracker.
func startAgents(c *sandbox.Cluster, o Options, st *Stack, a addrs, proxyIP string) error {
	shard := st.Shard
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	consulAddr := st.Consul.HTTPAddr()
	for i, r := range shard.Nodes() {
		cfg := map[string]any{
			"node_name": fmt.Sprintf("redis-host-%d", i+1),
			"consul":    map[string]any{"address": consulAddr},
			"sentinel":  map[string]any{"addresses": sentinels},
			"redis":     []any{map[string]any{"address": r.Addr(), "master_name": shard.Name}},
			"sentinels": []any{map[string]any{"address": shard.Sentinels[i].Addr()}},
		}
		name := fmt.Sprintf("agent-redis-%d", i+1)
		var ag *sandbox.Agent
		var err error
		if i == 0 {
			ag, err = c.StartAgentAt(o.Agent, name, a.dashboard, cfg, nil)
		} else {
			ag, err = c.StartAgent(o.Agent, name, r.IP(), cfg)
		}
		if err != nil {
			return err
		}
		st.Agents = append(st.Agents, ag.Process)
		if i == 0 {
			st.Dashboard = ag.URL("/")
		}
	}
	ncfg, stats, err := writePool(c, a.proxy, shard.Master.Addr(), proxyIP)
	if err != nil {
		return err
	}
	nut, err := sandbox.Binary("nutcracker")
	if err != nil {
		return err
	}
	cfg := map[string]any{
		"node_name": "proxy-host-1",
		"consul":    map[string]any{"address": consulAddr},
		"sentinel":  map[string]any{"addresses": sentinels},
		"twemproxy": []any{map[string]any{
			"name": "main", "config_file": ncfg,
			"restart": map[string]any{"mode": "supervise", "command": []string{nut, "-c", ncfg, "-s", fmt.Sprint(stats), "-a", proxyIP}},
		}},
	}
	ag, err := c.StartAgent(o.Agent, "agent-proxy", proxyIP, cfg)
	if err != nil {
		return err
	}
	st.Agents = append(st.Agents, ag.Process)
	st.Proxy = a.proxy
	return nil
}

// writePool writes the twemproxy config of the demo's one pool and returns
// its path and the stats port on proxyIP.
func writePool(c *sandbox.Cluster, listen, master, proxyIP string) (string, int, error) {
	stats, err := c.FreePort(proxyIP)
	if err != nil {
		return "", 0, err
	}
	pdir, err := c.ProcessDir("nutcracker")
	if err != nil {
		return "", 0, err
	}
	ncfg := filepath.Join(pdir, "nutcracker.yml")
	pool := fmt.Sprintf(`# twemproxy in front of the demo shard; the agent rewrites only the
# address of the server named "mymaster" when Sentinel fails over.
main:
  listen: %s
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  timeout: 400
  servers:
    - %s:1 mymaster
`, listen, master)
	if err := os.WriteFile(ncfg, []byte(pool), 0o644); err != nil {
		return "", 0, fmt.Errorf("write nutcracker config: %w", err)
	}
	return ncfg, stats, nil
}

// stopAll stops the agents side by side, so they deregister from Consul
// before Close kills everything.
func stopAll(agents []*sandbox.Process) {
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() { _ = a.Stop() })
	}
	wg.Wait()
}
