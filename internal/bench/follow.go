package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// FigFollow is figure 8: the agent following Sentinel's promotion through
// twemproxy and Consul DNS, measured in the stack of figure 7 and the same
// runs, beside HAProxy's own role check. --only haproxy and --only follow
// both run figures 7 and 8.
const FigFollow = "follow"

// hxStack is figures 7 and 8: one shard (3 Redis, an agent beside each, 3
// Sentinels of its own), one HAProxy with an agent-driven backend and a
// role-check backend over all three nodes, and one twemproxy pool supervised
// by the agent that drives HAProxy. Four clients write through it all at
// once: HAProxy driven, HAProxy role check, twemproxy, and Consul DNS.
type hxStack struct {
	e        *env
	shard    *sandbox.Shard
	hap      *sandbox.HAProxy
	pool     string // the twemproxy pool's listen address
	service  string // Consul service: master.<service>.service.consul
	ipToAddr map[string]string
	watch    *switchWatch
	runs     int // writers started, for unique key prefixes
	// proxyAgent drives HAProxy and twemproxy; nodeAgents are beside each
	// Redis, by its address.
	proxyAgent *agentProc
	nodeAgents map[string]*agentProc
}

func startHX(ctx context.Context, e *env) (*hxStack, error) {
	st := &hxStack{e: e, service: "redis-hx", ipToAddr: map[string]string{}, nodeAgents: map[string]*agentProc{}}
	shard, err := e.c.StartShard(sandbox.ShardOptions{Name: "hx", Replicas: 2})
	if err != nil {
		return nil, err
	}
	st.shard = shard
	var ref []sandbox.HAProxyServer
	for _, r := range shard.Nodes() {
		ref = append(ref, sandbox.HAProxyServer{Name: r.Name(), Addr: r.Addr()})
		st.ipToAddr[r.IP()] = r.Addr()
	}
	if st.hap, err = e.c.StartHAProxy(sandbox.HAProxyOptions{Backends: []sandbox.HAProxyBackend{
		{Name: "driven", Servers: []sandbox.HAProxyServer{{Name: "hx", Addr: shard.Master.Addr()}}, Check: true},
		{Name: "ref", Servers: ref, RoleCheck: true, Inter: 100 * time.Millisecond},
	}}); err != nil {
		return nil, err
	}
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	for _, n := range shard.Nodes() {
		a, err := e.startAgent("agent-"+n.Name(), n.IP(), map[string]any{
			"node_name": n.Name(),
			"sentinel":  map[string]any{"addresses": sentinels},
			"redis":     []any{map[string]any{"address": n.Addr(), "master_name": shard.Name, "service": st.service}},
		})
		if err != nil {
			return nil, err
		}
		st.nodeAgents[n.Addr()] = a
	}
	ip := e.c.NewIP()
	ports, err := e.freePorts(ip, 2)
	if err != nil {
		return nil, err
	}
	st.pool = addrOf(ip, ports[0])
	dir, err := e.proxyDir("hx-proxy-host")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nutcracker-hx.yml")
	if err := os.WriteFile(conf, []byte(poolYAML([]poolSpec{{"hx", st.pool, shard.Master.Addr(), shard.Name}})), 0o644); err != nil {
		return nil, err
	}
	if st.proxyAgent, err = e.startAgent("agent-haproxy", ip, map[string]any{
		"node_name": "bench-haproxy",
		"consul":    map[string]any{"ttl": "3s"},
		"sentinel":  map[string]any{"addresses": sentinels},
		"haproxy": []any{map[string]any{
			"name": "bench", "runtime_api": st.hap.Socket, "reconcile": "2s",
			"servers": []any{map[string]any{"backend": "driven", "server": "hx", "master_name": shard.Name}},
		}},
		"twemproxy": []any{map[string]any{
			"name": "hx", "config_file": conf, "nutcracker": e.nut,
			"restart": map[string]any{"mode": "supervise", "command": []string{e.nut, "-c", conf, "-s", fmt.Sprint(ports[1]), "-a", ip}},
		}},
	}); err != nil {
		return nil, err
	}
	if st.watch, err = watchSwitches(ctx, shard.Sentinels); err != nil {
		return nil, err
	}
	return st, nil
}

func (st *hxStack) close() {
	if st.watch != nil {
		st.watch.close()
	}
}

func (st *hxStack) nodes() []string {
	var out []string
	for _, n := range st.shard.Nodes() {
		out = append(out, n.Addr())
	}
	return out
}

// hxClients are the four writers of one run.
type hxClients struct {
	driven, ref *sandbox.AckWriter
	twem, dns   *writer
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	once        sync.Once
}

// startClients starts the four writers. The twemproxy and DNS clients write
// every ms and 5 ms (a DNS client asking every ms through a whole outage
// would load Consul more than any real one does); the DNS client resolves
// again after every error, as a client that follows a master by name must.
func (st *hxStack) startClients(ctx context.Context, tag string) *hxClients {
	st.runs++
	cl := &hxClients{driven: sandbox.StartAckWriter("driven", st.hap.Frontends["driven"]), ref: sandbox.StartAckWriter("ref", st.hap.Frontends["ref"])}
	r := resolverFor(st.e.consul.DNSAddr())
	cl.twem = newWriter(fmt.Sprintf("%s:twem:%d", tag, st.runs), time.Millisecond, func(context.Context) (string, error) { return st.pool, nil })
	cl.dns = newWriter(fmt.Sprintf("%s:dns:%d", tag, st.runs), 5*time.Millisecond, func(ctx context.Context) (string, error) {
		qctx, qcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer qcancel()
		ips, err := lookupA(qctx, r, "master."+st.service+".service.consul")
		if err != nil || len(ips) == 0 {
			return "", err
		}
		return st.ipToAddr[ips[0]], nil
	})
	cl.dns.dropOnError = true
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	cl.cancel = cancel
	for _, w := range []*writer{cl.twem, cl.dns} {
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			w.run(wctx, 200000)
		}()
	}
	return cl
}

func (cl *hxClients) stop() {
	cl.once.Do(func() {
		cl.cancel()
		cl.wg.Wait()
		cl.driven.Stop()
		cl.ref.Stop()
	})
}

// writing waits until every client has writes acknowledged.
func (cl *hxClients) writing(ctx context.Context) error {
	return sandbox.Poll(ctx, "writes through HAProxy, twemproxy and DNS", func(context.Context) error {
		if cl.driven.Count() < 100 || cl.ref.Count() < 100 || !cl.twem.recentOK(20*time.Millisecond) || !cl.dns.recentOK(50*time.Millisecond) {
			return fmt.Errorf("acknowledged: %d driven, %d role check; twemproxy and DNS not both writing yet", cl.driven.Count(), cl.ref.Count())
		}
		return nil
	})
}

// hxLost is, per client, the acknowledged writes missing on the final master.
type hxLost struct{ driven, ref, twem, dns, acked int }

// lost stops the clients and counts their acknowledged keys that the final
// master lacks.
func (st *hxStack) lost(ctx context.Context, cl *hxClients, final string) (hxLost, error) {
	cl.stop()
	var l hxLost
	c := st.e.client(final)
	for _, w := range []struct {
		keys []string
		n    *int
	}{{cl.driven.Keys(), &l.driven}, {cl.ref.Keys(), &l.ref}, {cl.twem.ackedKeys(), &l.twem}, {cl.dns.ackedKeys(), &l.dns}} {
		l.acked += len(w.keys)
		for i := 0; i < len(w.keys); i += 500 {
			batch := w.keys[i:min(i+500, len(w.keys))]
			n, err := c.Exists(ctx, batch...).Result()
			if err != nil {
				return l, fmt.Errorf("EXISTS on %s: %w", final, err)
			}
			*w.n += len(batch) - int(n)
		}
	}
	return l, nil
}

// waitFinal waits until the Sentinels name a master other than old and the
// shard is at rest on it, and returns it.
func (st *hxStack) waitFinal(ctx context.Context, old string) (string, error) {
	var final string
	err := sandbox.Poll(ctx, "the shard at rest on a master other than "+old, func(ctx context.Context) error {
		var err error
		if final, err = st.shard.CurrentMaster(ctx); err != nil {
			return err
		}
		if final == old {
			return fmt.Errorf("the Sentinels name the old master %s", final)
		}
		return st.e.settled(ctx, st.shard.Name, st.shard.Sentinels, st.nodes(), final)
	})
	return final, err
}

// ownLog reads, from the agents' own logs, when the proxy agent and the
// promoted node's agent confirmed the promotion to addr (at or after since),
// and the proxy agent's first twemproxy pipeline run after since. Log times
// have millisecond resolution.
func (st *hxStack) ownLog(addr string, since time.Time) (proxyConfirm, nodeConfirm time.Time, run time.Duration, ok [3]bool) {
	first := func(lines []logLine) (logLine, bool) {
		for _, l := range lines {
			if !l.at.Before(since.Truncate(time.Millisecond)) {
				return l, true
			}
		}
		return logLine{}, false
	}
	if l, found := first(readLog(st.proxyAgent.LogPath(), "promotion confirmed", "new_master="+addr)); found {
		proxyConfirm, ok[0] = l.at, true
	}
	if a := st.nodeAgents[addr]; a != nil {
		if l, found := first(readLog(a.LogPath(), "promotion confirmed", "new_master="+addr)); found {
			nodeConfirm, ok[1] = l.at, true
		}
	}
	if l, found := first(readLog(st.proxyAgent.LogPath(), "config applied", "proxy=hx", "reason=rewrite")); found {
		if d, err := time.ParseDuration(l.kv["run"]); err == nil {
			run, ok[2] = d, true
		}
	}
	return proxyConfirm, nodeConfirm, run, ok
}
