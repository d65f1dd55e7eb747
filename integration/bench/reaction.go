package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
)

// Who follows a reaction shard's failovers with a twemproxy.
const (
	kindSupervise = "supervise" // the agent, restart mode supervise
	kindCommand   = "command"   // the agent, restart mode command
	kindBaseline  = "baseline"  // the old-agent stand-in (baseline.go)
)

// rxShard is one shard of the reaction stack: three Redis hosts with an
// agent each, and a twemproxy pool that follows it.
type rxShard struct {
	kind    string
	shard   *harness.Shard
	service string // Consul service of its Redis: master.<service>.service.consul
	agents  []*agentProc
	pool    string // the twemproxy pool's listen address
	master  string // current master

	triggers []trigger // each failover and kill, for the Consul write windows

	dns, land, blackout durations
	dnsMaxAnswers       int
}

// reactionStack is figures 1, 2, 3 and 6: one Consul, three Sentinels and
// three shards, each followed by a different twemproxy: the agent in
// supervise mode, the agent in command mode, and the baseline. Failovers go
// round-robin over the shards, so only one proxy restarts at a time and the
// three are measured the same way, interleaved, in the same run.
type reactionStack struct {
	e          *env
	sentinels  []*harness.Sentinel
	shards     []*rxShard
	proxyAgent *agentProc
	base       *baseline
	baseProxy  *daemonProxy
	cmdProxy   *daemonProxy
	watch      *switchWatch
	ipToAddr   map[string]string // Redis host → host:port, for the DNS client

	// Outage (figure 2) on the supervise shard.
	outTwem, outDNS, sentinelShare, agentTwem, agentDNS durations
	killsDNSMax                                        int
}

func startReaction(ctx context.Context, e *env) (*reactionStack, error) {
	rs := &reactionStack{e: e, ipToAddr: map[string]string{}}
	var err error
	e.logf("reaction: starting 3 Sentinels and 3 shards of 3 Redis")
	if rs.sentinels, err = e.c.StartSentinels(3, harness.SentinelOptions{DownAfter: time.Second, FailoverTimeout: 3 * time.Second}); err != nil {
		return nil, err
	}
	if err := e.sentinelDebug(ctx, rs.sentinels, "info-period", "1000", "publish-period", "500"); err != nil {
		return nil, err
	}
	services := map[string]string{kindSupervise: "redis", kindBaseline: "redis-base", kindCommand: "redis-cmd"}
	for _, kind := range []string{kindSupervise, kindBaseline, kindCommand} {
		sh, err := e.c.StartShard(harness.ShardOptions{Name: "rx-" + kind, Replicas: 2, Use: rs.sentinels})
		if err != nil {
			return nil, err
		}
		rs.shards = append(rs.shards, &rxShard{kind: kind, shard: sh, service: services[kind], master: sh.Master.Addr()})
		for _, n := range sh.Nodes() {
			rs.ipToAddr[n.IP()] = n.Addr()
		}
	}
	var sentinelAddrs []string
	for _, s := range rs.sentinels {
		sentinelAddrs = append(sentinelAddrs, s.Addr())
	}
	e.logf("reaction: starting an agent beside each of the 9 Redis")
	for _, sh := range rs.shards {
		for _, n := range sh.shard.Nodes() {
			a, err := e.startAgent("agent-"+n.Name(), n.IP(), map[string]any{
				"node_name": n.Name(),
				"sentinel":  map[string]any{"addresses": sentinelAddrs},
				"redis":     []any{map[string]any{"address": n.Addr(), "master_name": sh.shard.Name, "service": sh.service}},
			})
			if err != nil {
				return nil, err
			}
			sh.agents = append(sh.agents, a)
		}
	}

	// The twemproxy host: the agent manages two proxies, one supervised and
	// one restarted by a command.
	ip := e.c.NewIP()
	ports, err := e.freePorts(ip, 4)
	if err != nil {
		return nil, err
	}
	sup, base, cmd := rs.shards[0], rs.shards[1], rs.shards[2]
	sup.pool, cmd.pool = addrOf(ip, ports[0]), addrOf(ip, ports[1])
	dir, err := e.c.ProcessDir("proxy-host")
	if err != nil {
		return nil, err
	}
	supConf := filepath.Join(dir, "nutcracker-sup.yml")
	if err := os.WriteFile(supConf, []byte(poolYAML([]poolSpec{{"sup", sup.pool, sup.master, sup.shard.Name}})), 0o644); err != nil {
		return nil, err
	}
	if rs.cmdProxy, err = newDaemonProxy(filepath.Join(dir, "command"), e.nut,
		poolYAML([]poolSpec{{"cmd", cmd.pool, cmd.master, cmd.shard.Name}}), stopWaitStart, ip, ports[3]); err != nil {
		return nil, err
	}
	e.track(rs.cmdProxy)
	if err := rs.cmdProxy.start(ctx, cmd.pool); err != nil {
		return nil, err
	}
	statsSup := ports[2]
	e.logf("reaction: starting the twemproxy agent (supervise %s, command %s)", sup.pool, cmd.pool)
	rs.proxyAgent, err = e.startAgent("agent-proxy", ip, map[string]any{
		"node_name": "proxy-host",
		"sentinel":  map[string]any{"addresses": sentinelAddrs},
		"twemproxy": []any{
			map[string]any{
				"name": "sup", "config_file": supConf, "nutcracker": e.nut,
				"restart": map[string]any{"mode": "supervise", "command": []string{e.nut, "-c", supConf, "-s", fmt.Sprint(statsSup), "-a", ip}},
			},
			map[string]any{
				"name": "cmd", "config_file": rs.cmdProxy.conf, "nutcracker": e.nut,
				"restart": map[string]any{"mode": "command", "restart_command": []string{"/bin/sh", rs.cmdProxy.script}},
			},
		},
	})
	if err != nil {
		return nil, err
	}

	// The baseline's host.
	bip := e.c.NewIP()
	bports, err := e.freePorts(bip, 2)
	if err != nil {
		return nil, err
	}
	base.pool = addrOf(bip, bports[0])
	bdir, err := e.c.ProcessDir("baseline-host")
	if err != nil {
		return nil, err
	}
	if rs.baseProxy, err = newDaemonProxy(bdir, e.nut,
		poolYAML([]poolSpec{{"base", base.pool, base.master, base.shard.Name}}), killAndStart, bip, bports[1]); err != nil {
		return nil, err
	}
	e.track(rs.baseProxy)
	if err := rs.baseProxy.start(ctx, base.pool); err != nil {
		return nil, err
	}
	rs.base = &baseline{sentinel: rs.sentinels[0].Addr(), config: rs.baseProxy.conf, restart: rs.baseProxy.script}
	ready := make(chan error, 1)
	go rs.base.run(ctx, ready)
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}

	if rs.watch, err = watchSwitches(ctx, rs.sentinels); err != nil {
		return nil, err
	}
	e.logf("reaction: waiting for Consul DNS and every pool to serve the masters")
	for _, sh := range rs.shards {
		if err := rs.waitServing(ctx, sh, 60*time.Second); err != nil {
			return nil, err
		}
	}
	return rs, nil
}

func (rs *reactionStack) close() {
	if rs.watch != nil {
		rs.watch.close()
	}
}

// waitServing waits until DNS answers only the shard's master and a write
// through its pool lands there.
func (rs *reactionStack) waitServing(ctx context.Context, sh *rxShard, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := resolverFor(rs.e.consul.DNSAddr())
	name := "master." + sh.service + ".service.consul"
	if err := harness.Poll(ctx, name+" to answer "+sh.master, func(ctx context.Context) error {
		ips, err := lookupA(ctx, r, name)
		if err != nil {
			return err
		}
		if len(ips) != 1 || ips[0] != hostOf(sh.master) {
			return fmt.Errorf("answers %v", ips)
		}
		return nil
	}); err != nil {
		return err
	}
	return harness.Poll(ctx, "a write through "+sh.pool+" to land on "+sh.master, func(ctx context.Context) error {
		key := fmt.Sprintf("ready:%s:%d", sh.kind, time.Now().UnixNano())
		c, err := dialRESP(ctx, sh.pool, 200*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.do(time.Second, "SET", key, "1"); err != nil {
			return err
		}
		n, err := rs.e.client(sh.master).Exists(ctx, key).Result()
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("write did not land on %s", sh.master)
		}
		return nil
	})
}

func (rs *reactionStack) nodes(sh *rxShard) []string {
	var out []string
	for _, n := range sh.shard.Nodes() {
		out = append(out, n.Addr())
	}
	return out
}

// failover runs one measured SENTINEL FAILOVER of sh: from the first
// +switch-master to (a) Consul DNS answering only the new master and (b) the
// first write through the shard's twemproxy that lands on it, and the
// listener's blackout on the way.
func (rs *reactionStack) failover(ctx context.Context, sh *rxShard, run int) error {
	e := rs.e
	old := sh.master
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	name := "master." + sh.service + ".service.consul"
	dw := watchDNS(wctx, e.consul.DNSAddr(), name, time.Millisecond, 60000)
	wr := newWriter(fmt.Sprintf("rx:%s:%d", sh.kind, run), time.Millisecond, func(context.Context) (string, error) { return sh.pool, nil })
	wdone := make(chan struct{})
	go func() { defer close(wdone); wr.run(wctx, 60000) }()
	pr := startProber(wctx, sh.pool, 250*time.Microsecond, 240000)
	stopAll := func() {
		cancel()
		dw.stop()
		pr.stop()
		<-wdone
	}

	triggered := time.Now()
	sh.triggers = append(sh.triggers, trigger{at: triggered})
	if err := e.failover(ctx, rs.sentinels[0], sh.shard.Name); err != nil {
		stopAll()
		return err
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	sw, err := rs.watch.wait(sctx, sh.shard.Name, old, triggered)
	scancel()
	if err != nil {
		stopAll()
		return err
	}
	newIP := hostOf(sw.New)
	l := &landing{w: wr, since: sw.At, master: e.client(sw.New)}
	var dnsAt time.Time
	var landed write
	var haveDNS, haveLand bool
	deadline := sw.At.Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil && !(haveDNS && haveLand) {
		if !haveDNS {
			dnsAt, haveDNS = dw.firstExactly(newIP)
		}
		if !haveLand {
			landed, haveLand = l.poll(ctx)
		}
		sleep(ctx, 5*time.Millisecond)
	}
	stopAll()
	sh.dnsMaxAnswers = max(sh.dnsMaxAnswers, dw.maxAnswered())
	var worst time.Duration
	if haveDNS {
		sh.dns.add(dnsAt.Sub(sw.At))
	} else {
		sh.dns.fail()
	}
	if haveLand {
		sh.land.add(landed.Done.Sub(sw.At))
		// The restart's blackout: the longest refused stretch between the
		// switch and the landed write.
		for _, g := range pr.gaps() {
			if !g.FirstFail.Before(sw.At) && !g.To.After(landed.Done) {
				worst = max(worst, g.length())
			}
		}
		if worst > 0 {
			sh.blackout.add(worst)
		} else {
			sh.blackout.fail()
		}
	} else {
		sh.land.fail()
		sh.blackout.fail()
	}
	e.logf("reaction %s #%d: %s → %s  dns %s  write %s  blackout %s", sh.kind, run+1, old, sw.New,
		fmtDelta(dnsAt, sw.At, haveDNS), fmtDelta(landed.Done, sw.At, haveLand), fmtDur(worst))
	if !haveLand && sh.kind == kindBaseline {
		// The old agents' restart lost its race (the new nutcracker found the
		// port still bound and exited): nothing notices. Bring it back by
		// hand, as an operator would, before the next run.
		e.logf("reaction: baseline proxy did not come back; restarting it by hand")
		_ = rs.baseProxy.start(ctx, sh.pool)
	}
	sh.master = sw.New
	if err := e.waitSettled(ctx, sh.shard.Name, rs.sentinels, rs.nodes(sh), sh.master, 60*time.Second); err != nil {
		return err
	}
	return rs.waitServing(ctx, sh, 30*time.Second)
}

// kill is one run of figure 2: kill -9 the master of the supervise shard
// and time the outage two clients see, one writing through twemproxy and
// one that resolves master.redis.service.consul on every reconnect.
func (rs *reactionStack) kill(ctx context.Context, sh *rxShard, run int) error {
	e := rs.e
	old := sh.master
	var node *harness.Redis
	for _, n := range sh.shard.Nodes() {
		if n.Addr() == old {
			node = n
		}
	}
	if node == nil {
		return fmt.Errorf("kill: no node at %s", old)
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	r := resolverFor(e.consul.DNSAddr())
	var dnsMax int
	tw := newWriter(fmt.Sprintf("kill:twem:%d", run), time.Millisecond, func(context.Context) (string, error) { return sh.pool, nil })
	dwr := newWriter(fmt.Sprintf("kill:dns:%d", run), time.Millisecond, func(ctx context.Context) (string, error) {
		qctx, qcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer qcancel()
		ips, err := lookupA(qctx, r, "master."+sh.service+".service.consul")
		if err != nil || len(ips) == 0 {
			return "", err
		}
		dnsMax = max(dnsMax, len(ips))
		return rs.ipToAddr[ips[0]], nil
	})
	done := make(chan struct{}, 2)
	go func() { tw.run(wctx, 90000); done <- struct{}{} }()
	go func() { dwr.run(wctx, 90000); done <- struct{}{} }()
	stop := func() {
		cancel()
		<-done
		<-done
	}
	if err := harness.Poll(wctx, "both clients writing", func(context.Context) error {
		if !tw.recentOK(20*time.Millisecond) || !dwr.recentOK(20*time.Millisecond) {
			return fmt.Errorf("not writing yet")
		}
		return nil
	}); err != nil {
		stop()
		return err
	}
	killAt := time.Now()
	sh.triggers = append(sh.triggers, trigger{at: killAt, kill: true})
	if err := node.Kill(); err != nil {
		stop()
		return err
	}
	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	sw, err := rs.watch.wait(sctx, sh.shard.Name, old, killAt)
	scancel()
	if err != nil {
		stop()
		return err
	}
	lt := &landing{w: tw, since: killAt, master: e.client(sw.New)}
	ld := &landing{w: dwr, since: killAt, master: e.client(sw.New)}
	var wt, wd write
	var okT, okD bool
	deadline := sw.At.Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil && !(okT && okD) {
		if !okT {
			wt, okT = lt.poll(ctx)
		}
		if !okD {
			wd, okD = ld.poll(ctx)
		}
		sleep(ctx, 5*time.Millisecond)
	}
	stop()
	rs.killsDNSMax = max(rs.killsDNSMax, dnsMax)
	rs.sentinelShare.add(sw.At.Sub(killAt))
	if okT {
		rs.outTwem.add(wt.Done.Sub(killAt))
		rs.agentTwem.add(wt.Done.Sub(sw.At))
	} else {
		rs.outTwem.fail()
		rs.agentTwem.fail()
	}
	if okD {
		rs.outDNS.add(wd.Done.Sub(killAt))
		rs.agentDNS.add(wd.Done.Sub(sw.At))
	} else {
		rs.outDNS.fail()
		rs.agentDNS.fail()
	}
	e.logf("outage #%d: kill %s, +switch-master after %s; twemproxy outage %s, DNS outage %s", run+1, old,
		sw.At.Sub(killAt).Round(time.Millisecond), fmtDelta(wt.Done, killAt, okT), fmtDelta(wd.Done, killAt, okD))
	sh.master = sw.New
	// The killed node comes back; Sentinel makes it a replica of the new
	// master (or it already is one, from the config Sentinel rewrote).
	if err := node.Restart(); err != nil {
		return err
	}
	if err := e.waitSettled(ctx, sh.shard.Name, rs.sentinels, rs.nodes(sh), sh.master, 90*time.Second); err != nil {
		return err
	}
	return rs.waitServing(ctx, sh, 30*time.Second)
}

// trigger is a failover (or a kill) of a shard: the Consul requests from
// it to the next one are charged to it.
type trigger struct {
	at   time.Time
	kill bool
}

// writesPerTrigger returns, for each failover (kill false) or kill (kill
// true) of sh, the Consul requests of agents from it to the next trigger of
// the shard, or to end.
func writesPerTrigger(sh *rxShard, agents []*agentProc, kill bool, end time.Time) []map[string]int {
	var out []map[string]int
	for i, t := range sh.triggers {
		if t.kill != kill {
			continue
		}
		to := end
		if i+1 < len(sh.triggers) {
			to = sh.triggers[i+1].at
		}
		sum := map[string]int{}
		for _, a := range agents {
			for k, v := range a.counter.count(t.at, to) {
				sum[k] += v
			}
		}
		out = append(out, sum)
	}
	return out
}

func fmtDelta(at, from time.Time, ok bool) string {
	if !ok {
		return "none"
	}
	return fmt.Sprintf("%.1fms", ms(at.Sub(from)))
}

func fmtDur(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return fmt.Sprintf("%.1fms", ms(d))
}
