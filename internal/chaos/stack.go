package chaos

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// host is one machine of the stack: a Consul client agent, the agent beside
// it, and what the agent looks after.
type host struct {
	name   string
	consul *sandbox.Consul
	agent  *sandbox.Agent
	// consulLink and sentinelLinks stand between the agent and its Consul
	// agent and Sentinels, so a fault can cut them.
	consulLink    *sandbox.Link
	sentinelLinks []*sandbox.Link
	redis         *sandbox.Redis    // nil on the proxy hosts
	shard         *sandbox.Shard    // the shard of redis
	sentinel      *sandbox.Sentinel // the Sentinel this host's agent registers, if any
	cfg           map[string]any
}

// stack is everything the campaign runs.
type stack struct {
	c         *sandbox.Cluster
	servers   []*sandbox.Consul
	sentinels []*sandbox.Sentinel
	shards    []*sandbox.Shard
	hosts     []*host
	proxy     *host
	// edge is the host of the HAProxy, hap, whose agent drives it.
	edge *host
	hap  *sandbox.HAProxy
	// proxyConf is the nutcracker config file the proxy host's agent rewrites.
	proxyConf string
	// poolAddr is the twemproxy pool's listen address.
	poolAddr string
	nut      string
	// mountTmpfs puts the proxy's config directory on a small tmpfs of its
	// own, so that the DiskFull fault can fill it; mounted is that mount.
	mountTmpfs bool
	mounted    string
}

// shardNames are the Sentinel master names of the campaign's shards.
var shardNames = []string{"alpha", "beta"}

// startStack builds three Consul servers, three Sentinels, two shards of
// three Redis, a host (Consul client + agent) beside every Redis, one beside
// a supervised nutcracker and one beside an HAProxy.
func startStack(ctx context.Context, o Options, say func(string, ...any)) (*stack, error) {
	c, err := sandbox.New(sandbox.Options{Dir: o.Dir, AgentBin: o.Agent, StartTimeout: 60 * time.Second, StopTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	st := &stack{c: c, mountTmpfs: slices.Contains(o.Faults, DiskFull)}
	if st.nut, err = sandbox.Binary("nutcracker"); err != nil {
		return st, err
	}
	if err := st.startConsulServers(); err != nil {
		return st, err
	}
	say("consul: 3 servers up, leader elected")
	if st.sentinels, err = c.StartSentinels(3, sandbox.SentinelOptions{DownAfter: time.Second, FailoverTimeout: 3 * time.Second}); err != nil {
		return st, err
	}
	for _, name := range shardNames {
		// Every write fsynced: a Redis killed and restarted keeps what it
		// acknowledged, so a lost write is the failover's, not the disk's.
		sh, err := c.StartShard(sandbox.ShardOptions{Name: name, Replicas: 2, Use: st.sentinels, Quorum: 2,
			RedisExtra: []string{"appendonly yes", "appendfsync always"}})
		if err != nil {
			return st, err
		}
		st.shards = append(st.shards, sh)
	}
	say("redis: %d shards of 3, 3 sentinels", len(st.shards))
	i := 0
	for _, sh := range st.shards {
		for _, r := range sh.Nodes() {
			h := &host{name: fmt.Sprintf("host-%s-%d", sh.Name, len(st.hosts)+1), redis: r, shard: sh}
			if i < len(st.sentinels) {
				h.sentinel = st.sentinels[i]
			}
			i++
			if err := st.startHost(ctx, h); err != nil {
				return st, err
			}
			st.hosts = append(st.hosts, h)
		}
	}
	if err := st.startProxyHost(ctx); err != nil {
		return st, err
	}
	if err := st.startEdgeHost(ctx); err != nil {
		return st, err
	}
	say("agents: %d beside Redis, 1 beside nutcracker (pool %s), 1 beside HAProxy (%s)", len(st.hosts), st.poolAddr, st.hap.Socket)
	return st, nil
}

// startConsulServers starts the first server alone, then two more that join
// it: a three-server Raft cluster in which any one can die.
func (st *stack) startConsulServers() error {
	first, err := st.c.StartConsul(sandbox.ConsulOptions{Name: "consul-server-1", LogLevel: "warn", Extra: map[string]any{"dns_config": dnsConfig}})
	if err != nil {
		return err
	}
	st.servers = []*sandbox.Consul{first}
	for n := 2; n <= 3; n++ {
		k, err := st.c.StartConsul(sandbox.ConsulOptions{Name: fmt.Sprintf("consul-server-%d", n), LogLevel: "warn", Extra: map[string]any{
			"bootstrap_expect": 0, "retry_join": st.serfAddrs(), "dns_config": dnsConfig,
		}})
		if err != nil {
			return err
		}
		st.servers = append(st.servers, k)
	}
	return nil
}

func (st *stack) serfAddrs() []string {
	var out []string
	for _, s := range st.servers {
		out = append(out, net.JoinHostPort(s.IP(), strconv.Itoa(s.SerfLANPort)))
	}
	return out
}

// startClient starts a Consul client agent joined to the servers.
func (st *stack) startClient(name string) (*sandbox.Consul, error) {
	return st.c.StartConsul(sandbox.ConsulOptions{Name: name, LogLevel: "warn", Extra: map[string]any{
		"server": false, "bootstrap_expect": 0, "retry_join": st.serfAddrs(), "dns_config": dnsConfig,
	}})
}

// dnsConfig is what README recommends: no stale DNS reads. With Consul's
// default (allow_stale, max_stale of years) a Consul server that has just
// restarted answers while it replays its Raft log, so DNS names a master of
// minutes ago for some milliseconds; this campaign found it (and max_stale
// 1s does not stop it: the server is in contact with the leader, only behind).
var dnsConfig = map[string]any{"allow_stale": false, "node_ttl": "0s", "service_ttl": map[string]string{"*": "0s"}}

// links makes the cuttable links of one host's agent.
func (st *stack) links(h *host) error {
	var err error
	if h.consulLink, err = st.c.NewLink(h.consul.HTTPAddr()); err != nil {
		return err
	}
	for _, s := range st.sentinels {
		l, err := st.c.NewLink(s.Addr())
		if err != nil {
			return err
		}
		h.sentinelLinks = append(h.sentinelLinks, l)
	}
	return nil
}

func (st *stack) baseConfig(h *host) map[string]any {
	var sentinels []string
	for _, l := range h.sentinelLinks {
		sentinels = append(sentinels, l.Addr())
	}
	return map[string]any{
		"node_name": h.name,
		"consul":    map[string]any{"address": h.consulLink.Addr(), "ttl": "3s"},
		"sentinel":  map[string]any{"addresses": sentinels, "consul_service": ""},
		"timing":    map[string]any{"stale_master_grace": "3s"},
		"log":       map[string]any{"level": "debug"},
	}
}

func (st *stack) startHost(_ context.Context, h *host) error {
	var err error
	if h.consul, err = st.startClient("consul-" + h.name); err != nil {
		return err
	}
	if err := st.links(h); err != nil {
		return err
	}
	h.cfg = st.baseConfig(h)
	h.cfg["redis"] = []any{map[string]any{"address": h.redis.Addr(), "master_name": h.shard.Name}}
	if h.sentinel != nil {
		h.cfg["sentinels"] = []any{map[string]any{"address": h.sentinel.Addr()}}
	}
	h.agent, err = st.c.StartAgent("", "agent-"+h.name, h.redis.IP(), h.cfg)
	return err
}

// startProxyHost writes a two-pool-server nutcracker config and starts the
// agent that supervises nutcracker with it.
func (st *stack) startProxyHost(_ context.Context) error {
	h := &host{name: "host-proxy"}
	var err error
	if h.consul, err = st.startClient("consul-" + h.name); err != nil {
		return err
	}
	if err := st.links(h); err != nil {
		return err
	}
	ip := st.c.NewIP()
	listen, err := st.c.FreePort(ip)
	if err != nil {
		return err
	}
	stats, err := st.c.FreePort(ip)
	if err != nil {
		return err
	}
	dir, err := st.c.ProcessDir("nutcracker")
	if err != nil {
		return err
	}
	if st.mountTmpfs {
		if err := mountTmpfs(dir); err != nil {
			return err
		}
		st.mounted = dir
	}
	st.proxyConf = filepath.Join(dir, "nutcracker.yml")
	st.poolAddr = net.JoinHostPort(ip, strconv.Itoa(listen))
	var servers []string
	for _, sh := range st.shards {
		servers = append(servers, fmt.Sprintf("    - %s:1 %s", sh.Master.Addr(), sh.Name))
	}
	conf := fmt.Sprintf("# chaos campaign pool (modula: ketama with fnv1a_64 sends every key to one of two servers)\nmain:\n  listen: %s\n  hash: fnv1a_64\n  hash_tag: \"{}\"\n  distribution: modula\n  redis: true\n  auto_eject_hosts: false\n  timeout: 400\n  servers:\n%s\n",
		st.poolAddr, strings.Join(servers, "\n"))
	if err := os.WriteFile(st.proxyConf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write nutcracker config: %w", err)
	}
	h.cfg = st.baseConfig(h)
	h.cfg["twemproxy"] = []any{map[string]any{
		"name": "main", "config_file": st.proxyConf, "nutcracker": st.nut,
		"restart": map[string]any{"mode": "supervise", "command": []string{st.nut, "-c", st.proxyConf, "-s", strconv.Itoa(stats), "-a", ip}},
	}}
	if h.agent, err = st.c.StartAgent("", "agent-"+h.name, ip, h.cfg); err != nil {
		return err
	}
	st.proxy = h
	return nil
}

// startEdgeHost starts an HAProxy in front of both shards as
// deploy/haproxy/haproxy.cfg does (a frontend and a backend per shard, one
// server per backend named after the shard, a plain liveness check, the
// runtime API at level admin) and, on a host of its own, the agent that
// drives it through that API and registers the frontends in Consul.
func (st *stack) startEdgeHost(_ context.Context) error {
	h := &host{name: "host-edge"}
	var err error
	if h.consul, err = st.startClient("consul-" + h.name); err != nil {
		return err
	}
	if err := st.links(h); err != nil {
		return err
	}
	var backends []sandbox.HAProxyBackend
	for _, sh := range st.shards {
		backends = append(backends, sandbox.HAProxyBackend{
			Name: backendOf(sh.Name), Servers: []sandbox.HAProxyServer{{Name: sh.Name, Addr: sh.Master.Addr()}}, Check: true,
		})
	}
	if st.hap, err = st.c.StartHAProxy(sandbox.HAProxyOptions{Name: "haproxy", Backends: backends}); err != nil {
		return err
	}
	var servers, frontends []any
	for _, sh := range st.shards {
		be := backendOf(sh.Name)
		servers = append(servers, map[string]any{"backend": be, "server": sh.Name, "master_name": sh.Name})
		frontends = append(frontends, map[string]any{"name": be, "address": st.hap.Frontends[be], "backends": []any{be}})
	}
	h.cfg = st.baseConfig(h)
	h.cfg["haproxy"] = []any{map[string]any{"name": "edge", "runtime_api": st.hap.Socket, "servers": servers, "frontends": frontends}}
	if h.agent, err = st.c.StartAgent("", "agent-"+h.name, st.hap.IP(), h.cfg); err != nil {
		return err
	}
	st.edge = h
	return nil
}

// backendOf is the HAProxy backend (and frontend) of a shard.
func backendOf(shard string) string { return "redis-" + shard }

// allHosts is every host, the proxy hosts last.
func (st *stack) allHosts() []*host {
	return append(append([]*host(nil), st.hosts...), st.proxy, st.edge)
}

// nodeByIP finds the Redis listening on ip.
func (st *stack) nodeByIP(ip string) *sandbox.Redis {
	for _, sh := range st.shards {
		for _, r := range sh.Nodes() {
			if r.IP() == ip {
				return r
			}
		}
	}
	return nil
}

// dnsServers are the DNS addresses of every Consul agent, servers first.
func (st *stack) consuls() []*sandbox.Consul {
	out := append([]*sandbox.Consul(nil), st.servers...)
	for _, h := range st.allHosts() {
		out = append(out, h.consul)
	}
	return out
}
