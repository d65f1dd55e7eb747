package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// env is what every scenario shares: the harness cluster, one Consul, the
// binaries, and what must be cleaned up.
type env struct {
	o Options
	c *sandbox.Cluster
	// proxyRoot holds the twemproxy hosts' config files (see Options.ProxyDir).
	proxyRoot string
	consul    *sandbox.Consul
	agentBin  string
	nut       string
	began     time.Time

	mu       sync.Mutex
	daemons  []*daemonProxy
	counters []*consulCounter
	clients  map[string]*redis.Client
}

func (e *env) logf(format string, args ...any) {
	if e.o.Progress == nil {
		return
	}
	fmt.Fprintf(e.o.Progress, "[%6.1fs] %s\n", time.Since(e.began).Seconds(), fmt.Sprintf(format, args...))
}

// close stops every process the benchmark started: the harness children,
// the daemonized nutcrackers (by PID, found by their config path), and the
// counting proxies.
func (e *env) close() {
	e.mu.Lock()
	daemons, counters, clients := e.daemons, e.counters, e.clients
	e.daemons, e.counters, e.clients = nil, nil, nil
	e.mu.Unlock()
	for _, cl := range clients {
		cl.Close()
	}
	_ = e.c.Close()
	for _, d := range daemons {
		d.kill()
	}
	for _, cc := range counters {
		cc.close()
	}
}

// mark is where a phase begins: the processes and daemons started so far.
type mark struct{ procs, daemons int }

func (e *env) mark() mark {
	e.mu.Lock()
	defer e.mu.Unlock()
	return mark{procs: len(e.c.Processes()), daemons: len(e.daemons)}
}

// endPhase stops what was started since m, so that the next phase runs on a
// quiet machine: agents first, gracefully (they deregister), then the rest.
func (e *env) endPhase(m mark) {
	procs := e.c.Processes()[m.procs:]
	for _, p := range procs {
		if strings.HasPrefix(p.Name(), "agent-") {
			_ = p.Stop()
		}
	}
	for _, p := range procs {
		_ = p.Kill()
	}
	e.mu.Lock()
	daemons := e.daemons[m.daemons:]
	e.mu.Unlock()
	for _, d := range daemons {
		d.kill()
	}
}

// client returns a shared fail-fast client for a Redis or Sentinel.
func (e *env) client(addr string) *redis.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clients == nil {
		e.clients = map[string]*redis.Client{}
	}
	cl := e.clients[addr]
	if cl == nil {
		cl = sandbox.NewClient(addr, "")
		e.clients[addr] = cl
	}
	return cl
}

// proxyDir creates a directory for a twemproxy host's files under the
// proxy root.
func (e *env) proxyDir(name string) (string, error) {
	d := filepath.Join(e.proxyRoot, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	return d, nil
}

func (e *env) track(d *daemonProxy) {
	e.mu.Lock()
	e.daemons = append(e.daemons, d)
	e.mu.Unlock()
}

// agentProc is a running agent behind its own counting Consul proxy.
type agentProc struct {
	*sandbox.Agent
	counter *consulCounter
	started time.Time
}

// startAgent starts the agent binary on host ip with cfg; its Consul
// requests go through a new counting proxy on the same host.
func (e *env) startAgent(name, ip string, cfg map[string]any) (*agentProc, error) {
	cc, err := startConsulCounter(ip, e.consul.HTTPAddr())
	if err != nil {
		return nil, fmt.Errorf("consul counter for %s: %w", name, err)
	}
	e.mu.Lock()
	e.counters = append(e.counters, cc)
	e.mu.Unlock()
	consul, _ := cfg["consul"].(map[string]any)
	if consul == nil {
		consul = map[string]any{}
	}
	consul["address"] = cc.Addr()
	cfg["consul"] = consul
	if _, ok := cfg["log"]; !ok {
		cfg["log"] = map[string]any{"level": "info"}
	}
	started := time.Now()
	a, err := e.c.StartAgent(e.agentBin, name, ip, cfg)
	if err != nil {
		return nil, err
	}
	return &agentProc{Agent: a, counter: cc, started: started}, nil
}

// sentinelDebug changes Sentinel's internal periods (SENTINEL DEBUG, Redis
// 7): the benchmark shortens the INFO and hello periods so a shard settles
// in seconds between runs. Neither is on the path it measures.
func (e *env) sentinelDebug(ctx context.Context, sentinels []*sandbox.Sentinel, kv ...string) error {
	args := []any{"SENTINEL", "DEBUG"}
	for _, s := range kv {
		args = append(args, s)
	}
	for _, s := range sentinels {
		if err := e.client(s.Addr()).Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("SENTINEL DEBUG on %s: %w", s.Name(), err)
		}
	}
	return nil
}

// failover asks Sentinel s for a failover of name, retrying while Sentinel
// is not ready for another one (a failover in progress, or no replica it
// trusts yet).
func (e *env) failover(ctx context.Context, s *sandbox.Sentinel, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	for range 120 { // 30s at 250ms
		if ctx.Err() != nil {
			break
		}
		err = e.client(s.Addr()).Do(ctx, "SENTINEL", "FAILOVER", name).Err()
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "INPROG") && !strings.Contains(err.Error(), "NOGOODSLAVE") {
			break
		}
		sleep(ctx, 250*time.Millisecond)
	}
	return fmt.Errorf("SENTINEL FAILOVER %s on %s: %w", name, s.Name(), err)
}

// settled checks that a shard is at rest with master: every Sentinel names
// it and is not failing over, sees every other node as a linked replica of
// it, and every other node says so itself.
func (e *env) settled(ctx context.Context, name string, sentinels []*sandbox.Sentinel, nodes []string, master string) error {
	for _, s := range sentinels {
		cl := e.client(s.Addr())
		hp, err := cl.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name).StringSlice()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name(), err)
		}
		if len(hp) != 2 || net.JoinHostPort(hp[0], hp[1]) != master {
			return fmt.Errorf("%s names %v, not %s", s.Name(), hp, master)
		}
		m, err := redisMap(cl.Do(ctx, "SENTINEL", "MASTER", name))
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name(), err)
		}
		if m["flags"] != "master" {
			return fmt.Errorf("%s: master flags %s", s.Name(), m["flags"])
		}
		reps, err := cl.Do(ctx, "SENTINEL", "REPLICAS", name).Slice()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name(), err)
		}
		seen := map[string]map[string]string{}
		for _, r := range reps {
			rm := pairs(r)
			seen[net.JoinHostPort(rm["ip"], rm["port"])] = rm
		}
		for _, n := range nodes {
			if n == master {
				continue
			}
			rm := seen[n]
			if rm == nil {
				return fmt.Errorf("%s does not list replica %s", s.Name(), n)
			}
			if rm["flags"] != "slave" || rm["master-link-status"] != "ok" || net.JoinHostPort(rm["master-host"], rm["master-port"]) != master {
				return fmt.Errorf("%s sees %s as flags=%s link=%s master=%s:%s", s.Name(), n, rm["flags"], rm["master-link-status"], rm["master-host"], rm["master-port"])
			}
		}
	}
	for _, n := range nodes {
		if n == master {
			continue
		}
		info, err := e.client(n).Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		kv := infoMap(info)
		if kv["role"] != "slave" || kv["master_link_status"] != "up" || net.JoinHostPort(kv["master_host"], kv["master_port"]) != master {
			return fmt.Errorf("%s: role=%s link=%s master=%s:%s", n, kv["role"], kv["master_link_status"], kv["master_host"], kv["master_port"])
		}
	}
	return nil
}

// waitSettled polls settled until it holds or timeout passes.
func (e *env) waitSettled(ctx context.Context, name string, sentinels []*sandbox.Sentinel, nodes []string, master string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return sandbox.Poll(ctx, name+" to settle on "+master, func(ctx context.Context) error {
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		defer qcancel()
		return e.settled(qctx, name, sentinels, nodes, master)
	})
}

func redisMap(cmd *redis.Cmd) (map[string]string, error) {
	v, err := cmd.Result()
	if err != nil {
		return nil, err
	}
	return pairs(v), nil
}

// pairs turns a RESP2 flat list or a RESP3 map into a string map.
func pairs(v any) map[string]string {
	out := map[string]string{}
	switch t := v.(type) {
	case []any:
		for i := 0; i+1 < len(t); i += 2 {
			out[fmt.Sprint(t[i])] = fmt.Sprint(t[i+1])
		}
	case map[any]any:
		for k, val := range t {
			out[fmt.Sprint(k)] = fmt.Sprint(val)
		}
	}
	return out
}

func infoMap(s string) map[string]string {
	kv := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			kv[k] = v
		}
	}
	return kv
}

// landing finds the first write of a client, after a point in time, that
// landed on a given master: it asks the master itself whether the key is
// there. After a promotion nothing replicates from the old master to the new
// one, so a key present on the new master was written there.
type landing struct {
	w      *writer
	since  time.Time
	master *redis.Client
	// sentAfter counts only writes sent after since: a write still in
	// flight when a master is killed may have reached it, and its replicas
	// with it, before it died.
	sentAfter bool
	checked   int
}

func (l *landing) poll(ctx context.Context) (write, bool) {
	ws := l.w.okSince(l.since)
	if l.sentAfter {
		kept := ws[:0]
		for _, wr := range ws {
			if !wr.Sent.Before(l.since) {
				kept = append(kept, wr)
			}
		}
		ws = kept
	}
	for l.checked < len(ws) {
		end := min(l.checked+200, len(ws))
		pipe := l.master.Pipeline()
		cmds := make([]*redis.IntCmd, 0, end-l.checked)
		for _, wr := range ws[l.checked:end] {
			cmds = append(cmds, pipe.Exists(ctx, wr.Key))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return write{}, false
		}
		for j, c := range cmds {
			if c.Val() == 1 {
				return ws[l.checked+j], true
			}
		}
		l.checked = end
	}
	return write{}, false
}

// poolYAML is a twemproxy config with one pool per entry, each holding one
// server named after its Sentinel master.
func poolYAML(pools []poolSpec) string {
	var b strings.Builder
	for _, p := range pools {
		fmt.Fprintf(&b, `%s:
  listen: %s
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  timeout: 400
  servers:
    - %s:1 %s
`, p.name, p.listen, p.master, p.server)
	}
	return b.String()
}

type poolSpec struct{ name, listen, master, server string }

// freePorts allocates n ports on ip.
func (e *env) freePorts(ip string, n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := e.c.FreePort(ip)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

func addrOf(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// parallel runs f for 0..n-1 with at most width at a time and returns the
// first error.
func parallel(n, width int, f func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, width)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d failed; first: %w", len(errs), n, errs[0])
	}
	return nil
}
