package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
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
	shard   *sandbox.Shard
	service string // Consul service of its Redis: master.<service>.service.consul
	agents  []*agentProc
	pool    string // the twemproxy pool's listen address
	master  string // current master

	triggers []trigger // each failover and kill, for the Consul write windows

	dns, land, blackout durations
	// landOwn and ownLag: the write measured from the +switch-master of
	// the one Sentinel the baseline listens to, and how late that one was.
	landOwn, ownLag durations
	dnsMaxAnswers   int
	// dnsDouble counts failovers in which DNS answered two addresses for
	// the master name at some point; dnsDoubleLongest is the longest such
	// answer's lifetime.
	dnsDouble        int
	dnsDoubleLongest time.Duration
}

// reactionStack is figures 1, 2, 3 and 6: one Consul, three Sentinels and
// three shards, each followed by a different twemproxy: the agent in
// supervise mode, the agent in command mode, and the baseline. Failovers go
// round-robin over the shards, so only one proxy restarts at a time and the
// three are measured the same way, interleaved, in the same run.
type reactionStack struct {
	e          *env
	sentinels  []*sandbox.Sentinel
	shards     []*rxShard
	proxyAgent *agentProc
	base       *baseline
	baseProxy  *daemonProxy
	cmdProxy   *daemonProxy
	watch      *switchWatch
	ipToAddr   map[string]string // Redis host → host:port, for the DNS client

	consulAPI *api.Client
	// refailovers counts the times Sentinel failed a shard over again on
	// its own right after a measured failover.
	refailovers int

	// Consul alone (figure 1a's floor).
	floorCall, floorDNS durations
	// The agent's write step alone (figure 1b's floor), on the proxy disk.
	// Quiet: after a supervise failover has settled. Busy: at the switch of
	// a baseline-shard failover, when Sentinel, Redis, the shard's agents
	// and Consul all work at once (the baseline acts a second later).
	floorMu                        sync.Mutex
	floorDir                       string
	floorFlip                      bool
	floorCheck, floorWrite         durations
	floorBusyCheck, floorBusyWrite durations

	// Outage (figure 2) on the supervise shard.
	// sentinelShare ends when the promoted replica answers ROLE master;
	// switchAfter is kill → the first +switch-master.
	outTwem, outDNS, sentinelShare, switchAfter, agentTwem, agentDNS durations
	killsDNSMax                                                      int
}

func startReaction(ctx context.Context, e *env) (*reactionStack, error) {
	rs := &reactionStack{e: e, ipToAddr: map[string]string{}}
	var err error
	if rs.consulAPI, err = e.consul.Client(); err != nil {
		return nil, err
	}
	e.logf("reaction: starting 3 Sentinels and 3 shards of 3 Redis")
	if rs.sentinels, err = e.c.StartSentinels(3, sandbox.SentinelOptions{DownAfter: time.Second, FailoverTimeout: 3 * time.Second}); err != nil {
		return nil, err
	}
	if err := e.sentinelDebug(ctx, rs.sentinels, "info-period", "1000", "publish-period", "500"); err != nil {
		return nil, err
	}
	services := map[string]string{kindSupervise: "redis", kindBaseline: "redis-base", kindCommand: "redis-cmd"}
	for _, kind := range []string{kindSupervise, kindBaseline, kindCommand} {
		sh, err := e.c.StartShard(sandbox.ShardOptions{Name: "rx-" + kind, Replicas: 2, Use: rs.sentinels})
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
	dir, err := e.proxyDir("proxy-host")
	if err != nil {
		return nil, err
	}
	supConf := filepath.Join(dir, "nutcracker-sup.yml")
	rs.floorDir = dir
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
	bdir, err := e.proxyDir("baseline-host")
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
	if err := sandbox.Poll(ctx, name+" to answer "+sh.master, func(ctx context.Context) error {
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
	return sandbox.Poll(ctx, "a write through "+sh.pool+" to land on "+sh.master, func(ctx context.Context) error {
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

// settle waits until the shard is at rest on sh.master. With down-after at
// 1s, Sentinel sometimes fails a fresh master over again a second after the
// switch (all three Sentinels judged it down right after re-creating their
// links to it, though it answered all along): then the shard is followed to
// the master the Sentinels settle on, and the run is counted.
func (rs *reactionStack) settle(ctx context.Context, sh *rxShard) error {
	var err error
	for range 3 {
		if err = rs.e.waitSettled(ctx, sh.shard.Name, rs.sentinels, rs.nodes(sh), sh.master, 45*time.Second); err == nil {
			return nil
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		now, cerr := sh.shard.CurrentMaster(qctx)
		cancel()
		if cerr != nil || now == sh.master {
			return err
		}
		rs.e.logf("reaction %s: Sentinel failed over again, from %s to %s; following", sh.kind, sh.master, now)
		rs.refailovers++
		sh.master = now
		if n := len(sh.triggers); n > 0 {
			sh.triggers[n-1].twice = true
		}
	}
	return err
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
	// The client writes all along, as an application does. DNS is polled
	// and the listener probed only from the switch on: neither can change
	// before it, and polling Consul DNS every millisecond for the seconds a
	// failover takes would load the very Consul being measured.
	wr := newWriter(fmt.Sprintf("rx:%s:%d", sh.kind, run), time.Millisecond, func(context.Context) (string, error) { return sh.pool, nil })
	wdone := make(chan struct{})
	go func() { defer close(wdone); wr.run(wctx, 60000) }()
	stopWriter := func() {
		cancel()
		<-wdone
	}

	triggered := time.Now()
	sh.triggers = append(sh.triggers, trigger{at: triggered})
	if err := e.failover(ctx, rs.sentinels[0], sh.shard.Name); err != nil {
		stopWriter()
		return err
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	sw, err := rs.watch.wait(sctx, sh.shard.Name, old, triggered)
	scancel()
	if err != nil {
		stopWriter()
		return err
	}
	if sh.kind == kindBaseline {
		go func() {
			if c, w, ok := rs.pipelineFloor(ctx); ok {
				rs.floorMu.Lock()
				rs.floorBusyCheck.add(c)
				rs.floorBusyWrite.add(w)
				rs.floorMu.Unlock()
			}
		}()
	}
	dw := watchDNS(wctx, rs.consulAPI, e.consul.DNSAddr(), sh.service, name, 20*time.Millisecond)
	pr := startProber(wctx, sh.pool, 250*time.Microsecond, 80000)
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
	// A little more DNS, to see an answer that still flips back.
	sleep(ctx, 20*time.Millisecond)
	stopWriter()
	dw.stop()
	pr.stop()
	sh.dnsMaxAnswers = max(sh.dnsMaxAnswers, dw.maxAnswered())
	if n, longest := dw.multiple(); n > 0 {
		sh.dnsDouble++
		sh.dnsDoubleLongest = max(sh.dnsDoubleLongest, longest)
	}
	if haveDNS {
		sh.dns.add(dnsAt.Sub(sw.At))
	} else {
		sh.dns.fail()
	}
	var worst time.Duration
	if haveLand {
		sh.land.add(landed.Done.Sub(sw.At))
		if own, ok := rs.watch.from(sh.shard.Name, old, rs.sentinels[0].Addr(), triggered); ok {
			sh.landOwn.add(landed.Done.Sub(own.At))
			sh.ownLag.add(own.At.Sub(sw.At))
		}
		// The restart's blackout: the longest refused stretch between the
		// switch and the landed write.
		for _, g := range pr.gaps() {
			if !g.To.After(landed.Done) {
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
		sh.landOwn.fail()
		sh.blackout.fail()
	}
	e.logf("reaction %s #%d: %s → %s  dns %s  write %s  blackout %s", sh.kind, run+1, old, sw.New,
		fmtDelta(dnsAt, sw.At, haveDNS), fmtDelta(landed.Done, sw.At, haveLand), fmtDur(worst))
	if !haveLand || landed.Done.Sub(sw.At) > 250*time.Millisecond {
		end := landed.Done
		if !haveLand {
			end = time.Now()
		}
		e.logf("reaction %s #%d: failed writes after the switch: %s", sh.kind, run+1, wr.errorsBetween(sw.At, end))
	}
	if !haveLand && sh.kind == kindBaseline {
		// The old agents' restart lost its race (the new nutcracker found the
		// port still bound and exited): nothing notices. Bring it back by
		// hand, as an operator would, before the next run.
		e.logf("reaction: baseline proxy did not come back; restarting it by hand")
		_ = rs.baseProxy.start(ctx, sh.pool)
	}
	sh.master = sw.New
	if err := rs.settle(ctx, sh); err != nil {
		return err
	}
	if sh.kind == kindSupervise {
		if c, w, ok := rs.pipelineFloor(ctx); ok {
			rs.floorMu.Lock()
			rs.floorCheck.add(c)
			rs.floorWrite.add(w)
			rs.floorMu.Unlock()
		}
	}
	return rs.waitServing(ctx, sh, 30*time.Second)
}

// kill is one run of figure 2: kill -9 the master of the supervise shard
// and time the outage two clients see, one writing through twemproxy and
// one that resolves master.redis.service.consul on every reconnect.
func (rs *reactionStack) kill(ctx context.Context, sh *rxShard, run int) error {
	e := rs.e
	old := sh.master
	var node *sandbox.Redis
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
	// The DNS client retries every 5ms: a client that asked Consul DNS
	// every millisecond through a whole outage would load Consul more than
	// any real one does.
	dwr := newWriter(fmt.Sprintf("kill:dns:%d", run), 5*time.Millisecond, func(ctx context.Context) (string, error) {
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
	if err := sandbox.Poll(wctx, "both clients writing", func(context.Context) error {
		if !tw.recentOK(20*time.Millisecond) || !dwr.recentOK(20*time.Millisecond) {
			return fmt.Errorf("not writing yet")
		}
		return nil
	}); err != nil {
		stop()
		return err
	}
	pctx, pcancel := context.WithTimeout(ctx, 60*time.Second)
	defer pcancel()
	roles := watchPromotion(pctx, e, rs.nodes(sh), old)
	killAt := time.Now()
	sh.triggers = append(sh.triggers, trigger{at: killAt, kill: true})
	if err := node.Kill(); err != nil {
		stop()
		return err
	}
	// Reaped: no write sent from now on can reach the old master.
	deadAt := time.Now()
	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	sw, err := rs.watch.wait(sctx, sh.shard.Name, old, killAt)
	scancel()
	if err != nil {
		stop()
		return err
	}
	// The agent acts on the promotion, before +switch-master: its share
	// starts when the promoted replica answers ROLE master.
	promo, ok := roles.wait(pctx)
	if !ok {
		stop()
		return fmt.Errorf("no replica of %s answered ROLE master", old)
	}
	lt := &landing{w: tw, since: deadAt, master: e.client(sw.New), sentAfter: true}
	ld := &landing{w: dwr, since: deadAt, master: e.client(sw.New), sentAfter: true}
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
	rs.sentinelShare.add(promo.at.Sub(killAt))
	rs.switchAfter.add(sw.At.Sub(killAt))
	if okT {
		rs.outTwem.add(wt.Done.Sub(killAt))
		rs.agentTwem.add(wt.Done.Sub(promo.at))
	} else {
		rs.outTwem.fail()
		rs.agentTwem.fail()
	}
	if okD {
		rs.outDNS.add(wd.Done.Sub(killAt))
		rs.agentDNS.add(wd.Done.Sub(promo.at))
	} else {
		rs.outDNS.fail()
		rs.agentDNS.fail()
	}
	e.logf("outage #%d: kill %s, ROLE master after %s, +switch-master after %s; twemproxy outage %s, DNS outage %s", run+1, old,
		promo.at.Sub(killAt).Round(time.Millisecond), sw.At.Sub(killAt).Round(time.Millisecond), fmtDelta(wt.Done, killAt, okT), fmtDelta(wd.Done, killAt, okD))
	sh.master = sw.New
	// The killed node comes back; Sentinel makes it a replica of the new
	// master (or it already is one, from the config Sentinel rewrote).
	if err := node.Restart(); err != nil {
		return err
	}
	if err := rs.settle(ctx, sh); err != nil {
		return err
	}
	return rs.waitServing(ctx, sh, 30*time.Second)
}

// trigger is a failover (or a kill) of a shard: the Consul requests from
// it to the next one are charged to it.
type trigger struct {
	at   time.Time
	kill bool
	// twice: Sentinel failed the shard over again on its own in this
	// window; its Consul writes are not one failover's.
	twice bool
}

// writesPerTrigger returns, for each failover (kill false) or kill (kill
// true) of sh, the Consul requests of agents from it to the next trigger of
// the shard, or to end.
func writesPerTrigger(sh *rxShard, agents []*agentProc, kill bool, end time.Time) []map[string]int {
	var out []map[string]int
	for i, t := range sh.triggers {
		if t.kill != kill || t.twice {
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

// consulFloor measures Consul alone, with no agent: an agent-API register
// of a service with a new tag, and the time until Consul DNS answers the
// tag. It is the floor under figure 1a on this machine.
func consulFloor(ctx context.Context, e *env, n int) (call, dns durations, err error) {
	cl, err := e.consul.Client()
	if err != nil {
		return call, dns, err
	}
	defer func() { _ = cl.Agent().ServiceDeregister("bench-floor") }()
	for i := range n {
		tag := fmt.Sprintf("t%d", i)
		dw := watchDNS(ctx, cl, e.consul.DNSAddr(), "bench-floor", tag+".bench-floor.service.consul", 20*time.Millisecond)
		start := time.Now()
		if err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: "bench-floor", Name: "bench-floor", Tags: []string{tag}, Address: "127.0.0.1", Port: 1,
		}); err != nil {
			dw.stop()
			return call, dns, fmt.Errorf("register floor service: %w", err)
		}
		call.add(time.Since(start))
		var at time.Time
		ok := false
		for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline) && ctx.Err() == nil; {
			sleep(ctx, 2*time.Millisecond)
			at, ok = dw.firstExactly("127.0.0.1")
		}
		dw.stop()
		if ok {
			dns.add(at.Sub(start))
		} else {
			dns.fail()
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return call, dns, nil
}

// applied returns the agent's "config applied" lines of a rewrite of proxy.
func (rs *reactionStack) applied(proxy string) []logLine {
	return readLog(rs.proxyAgent.LogPath(), "config applied", "proxy="+proxy, "reason=rewrite")
}

// consulApplied collects, from the shard agents' logs, the time from their
// +switch-master to the new master's registration.
func (rs *reactionStack) consulApplied(since time.Time) durations {
	var d durations
	for _, sh := range rs.shards {
		for _, a := range sh.agents {
			x := durationsOf(readLog(a.LogPath(), "failover applied in consul"), "took", since)
			d.xs = append(d.xs, x.xs...)
		}
	}
	return d
}

// consulRegisterCalls collects the duration of the registrations as master.
func (rs *reactionStack) consulRegisterCalls(since time.Time) durations {
	var d durations
	for _, sh := range rs.shards {
		for _, a := range sh.agents {
			x := durationsOf(readLog(a.LogPath(), "registered:", `tags="master,`), "took", since)
			d.xs = append(d.xs, x.xs...)
		}
	}
	return d
}

// pipelineFloor runs the agent's own write step once, in the benchmark's
// process, on the supervise proxy's disk: nutcracker --test-conf on a temp
// file, then the atomic replace with fsync (twemproxy.WriteAtomic, the code
// the agent runs). It says what that step costs on this disk at this moment,
// apart from the agent's process.
func (rs *reactionStack) pipelineFloor(ctx context.Context) (check, write time.Duration, ok bool) {
	rs.floorMu.Lock()
	defer rs.floorMu.Unlock()
	path := filepath.Join(rs.floorDir, "floor.yml")
	rs.floorFlip = !rs.floorFlip
	port := 1
	if rs.floorFlip {
		port = 2
	}
	data := []byte(poolYAML([]poolSpec{{"floor", "127.0.0.1:1", fmt.Sprintf("127.0.0.1:%d", port), "floor"}}))
	start := time.Now()
	_, err := twemproxy.WriteAtomic(path, data, twemproxy.WriteOptions{Backup: true, Check: func(tmp string) error {
		s := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := twemproxy.CheckFile(cctx, rs.e.nut, tmp)
		check = time.Since(s)
		return err
	}})
	if err != nil {
		rs.e.logf("pipeline floor: %v", err)
		return 0, 0, false
	}
	return check, time.Since(start) - check, true
}
