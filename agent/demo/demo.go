// Package demo brings up a sandbox stack on loopback — one Consul, one shard
// of three Redis, three Sentinels, a twemproxy and the agents beside them —
// so a person can watch the agent follow a failover. It reuses the
// integration harness, so the demo runs exactly what the tests run.
package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// Options configure the demo.
type Options struct {
	// Agent is the redis-consul-agent binary to run for each host.
	Agent string
	// Dir holds every process' files; empty means a new temp dir, removed
	// on exit.
	Dir string
	// Out receives the guide for the person running the demo.
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
}

// Run starts the stack, prints the guide and blocks until ctx is done, then
// tears everything down and removes what it made.
func Run(ctx context.Context, o Options) (err error) {
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "rca-demo-")
		if err != nil {
			return fmt.Errorf("demo dir: %w", err)
		}
		dir = d
		defer os.RemoveAll(dir)
	}
	if err := sandbox.CheckBinaries(); err != nil {
		return err
	}
	c, err := sandbox.New(sandbox.Options{Dir: dir, StartTimeout: 60 * time.Second})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.DumpLogs(o.Out)
		}
		c.Close()
	}()

	fmt.Fprintln(o.Out, "starting Consul, 3 Redis, 3 Sentinels ...")
	consul, err := c.StartConsul(sandbox.ConsulOptions{Name: "consul-demo"})
	if err != nil {
		return err
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2, Sentinels: 3, Quorum: 2, DownAfter: 2 * time.Second, FailoverTimeout: 6 * time.Second})
	if err != nil {
		return err
	}
	st := &Stack{Consul: consul, Shard: shard}

	// One agent per Redis host, registering its Redis and its Sentinel.
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	for i, r := range shard.Nodes() {
		cfg := map[string]any{
			"node_name": fmt.Sprintf("redis-host-%d", i+1),
			"consul":    map[string]any{"address": consul.HTTPAddr()},
			"sentinel":  map[string]any{"addresses": sentinels},
			"redis":     []any{map[string]any{"address": r.Addr(), "master_name": shard.Name}},
			"sentinels": []any{map[string]any{"address": shard.Sentinels[i].Addr()}},
		}
		p, dash, err := startAgent(c, o.Agent, fmt.Sprintf("agent-redis-%d", i+1), r.IP(), cfg)
		if err != nil {
			return err
		}
		st.Agents = append(st.Agents, p)
		if st.Dashboard == "" {
			st.Dashboard = dash
		}
	}

	// The twemproxy host: the agent supervises nutcracker.
	ip := c.NewIP()
	listen, err := c.FreePort(ip)
	if err != nil {
		return err
	}
	stats, err := c.FreePort(ip)
	if err != nil {
		return err
	}
	pdir, err := c.ProcessDir("nutcracker")
	if err != nil {
		return err
	}
	ncfg := filepath.Join(pdir, "nutcracker.yml")
	st.Proxy = fmt.Sprintf("%s:%d", ip, listen)
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
`, st.Proxy, shard.Master.Addr())
	if err := os.WriteFile(ncfg, []byte(pool), 0o644); err != nil {
		return fmt.Errorf("write nutcracker config: %w", err)
	}
	nut, err := sandbox.Binary("nutcracker")
	if err != nil {
		return err
	}
	cfg := map[string]any{
		"node_name": "proxy-host-1",
		"consul":    map[string]any{"address": consul.HTTPAddr()},
		"sentinel":  map[string]any{"addresses": sentinels},
		"twemproxy": []any{map[string]any{
			"name": "main", "config_file": ncfg,
			"restart": map[string]any{"mode": "supervise", "command": []string{nut, "-c", ncfg, "-s", fmt.Sprint(stats), "-a", ip}},
		}},
	}
	p, _, err := startAgent(c, o.Agent, "agent-proxy", ip, cfg)
	if err != nil {
		return err
	}
	st.Agents = append(st.Agents, p)

	guide(o.Out, st)
	if o.Ready != nil {
		o.Ready(st)
		return nil
	}
	<-ctx.Done()
	fmt.Fprintln(o.Out, "\nstopping: the agents deregister, then every process is stopped")
	for _, a := range st.Agents {
		a.Stop()
	}
	return nil
}

// startAgent starts the agent binary for one demo host.
func startAgent(c *sandbox.Cluster, bin, name, ip string, cfg map[string]any) (*sandbox.Process, string, error) {
	a, err := c.StartAgent(bin, name, ip, cfg)
	if err != nil {
		return nil, "", err
	}
	return a.Process, a.URL("/"), nil
}

func guide(w io.Writer, st *Stack) {
	dnsHost, dnsPort := splitHostPort(st.Consul.DNSAddr())
	m := st.Shard.Master
	s := st.Shard.Sentinels[0]
	proxyHost, proxyPort := splitHostPort(st.Proxy)
	fmt.Fprintf(w, `
redis-consul-agent demo is running. Everything listens on loopback.

  Dashboard        %s
  Consul UI        http://%s/ui/
  Agent status     redis-consul-agent status --http-addr %s

  Ask Consul DNS:
    dig @%s -p %s master.redis.service.consul +short
    dig @%s -p %s replica.redis.service.consul +short
    dig @%s -p %s mymaster-master.redis.service.consul +short
    dig @%s -p %s twemproxy.service.consul SRV +short

  Write through twemproxy:
    redis-cli -h %s -p %s set hello world

  Trigger a failover, then watch the dashboard and DNS:
    redis-cli -h %s -p %d sentinel failover mymaster      # a clean failover
    kill -9 %d                                             # or kill the master (pid of %s)

Press Ctrl-C to stop and clean up.
`, st.Dashboard, st.Consul.HTTPAddr(), trimURL(st.Dashboard),
		dnsHost, dnsPort, dnsHost, dnsPort, dnsHost, dnsPort, dnsHost, dnsPort,
		proxyHost, proxyPort, s.IP(), s.Port(), m.Pid(), m.Addr())
}

func splitHostPort(a string) (string, string) {
	h, p, _ := net.SplitHostPort(a)
	return h, p
}

func trimURL(u string) string {
	return strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
}
