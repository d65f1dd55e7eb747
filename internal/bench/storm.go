package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// stormStack is figure 4: three Sentinels watching many masters (each with
// one replica) and two twemproxy agents, each with one pool per master.
//
// Real Sentinels cannot switch 200 masters within 100 ms on command: each
// promotion is detected on a 1 s INFO period and each switch rewrites the
// Sentinel's config file, so SENTINEL FAILOVER for every master spreads the
// +switch-master over seconds. Each burst therefore makes two storms:
//
//   - natural: the agent "storm" sees the switches as Sentinel makes them;
//   - at once: the agent "dense" is frozen (SIGSTOP) while Sentinel makes
//     them and resumed once every switch is published: it then reads every
//     +switch-master from its subscriptions at once, as it would if 200
//     masters switched within the same millisecond. This is the "200 masters
//     switch within 100 ms" of docs/BENCHMARKS.md; its clock starts at the resume.
type stormStack struct {
	e         *env
	sentinels []*sandbox.Sentinel
	shards    []*sandbox.Shard
	masters   []string // current master per shard
	watch     *switchWatch
	proxies   []*stormProxy // natural, at once
}

// stormProxy is one agent with its twemproxy and its figures.
type stormProxy struct {
	name  string
	agent *agentProc
	pools []string // listen address per shard
	// conns holds one client connection per pool, reused between checks
	// (a check is one SET), dialled again after the proxy restarts.
	conns []*respConn

	spread, restarts, fromFirst, fromLast values
	rollbacks                             int
}

func startStorm(ctx context.Context, e *env, n int) (*stormStack, error) {
	st := &stormStack{e: e}
	var err error
	e.logf("storm: starting 3 Sentinels, %d masters and %d replicas", n, n)
	// The failovers are forced: a long down-after keeps 2n instances on a
	// loaded machine from going subjectively down on their own.
	if st.sentinels, err = e.c.StartSentinels(3, sandbox.SentinelOptions{DownAfter: 30 * time.Second, FailoverTimeout: 5 * time.Second}); err != nil {
		return nil, err
	}
	// Fast hello and INFO while 2n instances are discovered.
	if err := e.sentinelDebug(ctx, st.sentinels, "info-period", "1000", "publish-period", "500"); err != nil {
		return nil, err
	}
	st.shards = make([]*sandbox.Shard, n)
	if err := parallel(n, 8, func(i int) error {
		sh, err := e.c.StartShard(sandbox.ShardOptions{Name: fmt.Sprintf("st%03d", i), Replicas: 1, Use: st.sentinels})
		st.shards[i] = sh
		return err
	}); err != nil {
		return nil, err
	}
	st.masters = make([]string, n)
	for i, sh := range st.shards {
		st.masters[i] = sh.Master.Addr()
	}
	// Stock periods for the bursts: with 2n instances, INFO every second
	// and hello every 500ms would cost the Sentinels and the Redis a large
	// part of this machine. Settling between bursts takes longer.
	if err := e.sentinelDebug(ctx, st.sentinels, "info-period", "10000", "publish-period", "2000"); err != nil {
		return nil, err
	}
	var all []string
	for _, s := range st.sentinels {
		all = append(all, s.Addr())
	}
	for _, p := range []struct {
		name      string
		sentinels []string
	}{{"storm", all}, {"dense", all}} {
		sp, err := st.startProxy(p.name, p.sentinels)
		if err != nil {
			return nil, err
		}
		st.proxies = append(st.proxies, sp)
	}
	if st.watch, err = watchSwitches(ctx, st.sentinels); err != nil {
		return nil, err
	}
	// Every pool serves its master before the first burst.
	tctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	for _, sp := range st.proxies {
		if err := sandbox.Poll(tctx, "every pool of "+sp.name+" to serve its master", func(ctx context.Context) error {
			return parallel(n, 16, func(i int) error { return st.landsOn(ctx, sp, i, st.masters[i], "ready") })
		}); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// startProxy starts an agent supervising a nutcracker with one pool per
// shard, following the given Sentinels.
func (st *stormStack) startProxy(name string, sentinels []string) (*stormProxy, error) {
	e := st.e
	n := len(st.shards)
	ip := e.c.NewIP()
	ports, err := e.freePorts(ip, n+1)
	if err != nil {
		return nil, err
	}
	sp := &stormProxy{name: name, pools: make([]string, n), conns: make([]*respConn, n)}
	specs := make([]poolSpec, n)
	for i, sh := range st.shards {
		sp.pools[i] = addrOf(ip, ports[i])
		specs[i] = poolSpec{fmt.Sprintf("p%03d", i), sp.pools[i], st.masters[i], sh.Name}
	}
	dir, err := e.proxyDir("storm-" + name)
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nutcracker.yml")
	if err := os.WriteFile(conf, []byte(poolYAML(specs)), 0o644); err != nil {
		return nil, err
	}
	e.logf("storm: starting twemproxy agent %q with %d pools, following %d Sentinel(s)", name, n, len(sentinels))
	sp.agent, err = e.startAgent("agent-storm-"+name, ip, map[string]any{
		"node_name": "storm-" + name,
		"sentinel":  map[string]any{"addresses": sentinels},
		"twemproxy": []any{map[string]any{
			"name": name, "config_file": conf, "nutcracker": e.nut,
			"restart": map[string]any{"mode": "supervise", "command": []string{e.nut, "-c", conf, "-s", fmt.Sprint(ports[n]), "-a", ip}},
		}},
	})
	return sp, err
}

func (st *stormStack) close() {
	if st.watch != nil {
		st.watch.close()
	}
	for _, sp := range st.proxies {
		for _, c := range sp.conns {
			if c != nil {
				c.Close()
			}
		}
	}
}

// landsOn writes a fresh key through pool i of sp and reports whether
// master has it. Only one goroutine checks a given pool at a time.
func (st *stormStack) landsOn(ctx context.Context, sp *stormProxy, i int, master, tag string) error {
	c := sp.conns[i]
	if c == nil {
		var err error
		if c, err = dialRESP(ctx, sp.pools[i], 200*time.Millisecond); err != nil {
			return err
		}
		sp.conns[i] = c
	}
	key := fmt.Sprintf("storm:%s:%s:%d:%d", sp.name, tag, i, time.Now().UnixNano())
	if _, err := c.do(time.Second, "SET", key, "1"); err != nil {
		var re replyError
		if !errors.As(err, &re) {
			c.Close()
			sp.conns[i] = nil
		}
		return fmt.Errorf("pool %d: %w", i, err)
	}
	n, err := st.e.client(master).Exists(ctx, key).Result()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("pool %d: write did not land on %s", i, master)
	}
	return nil
}

func (sp *stormProxy) counter(ctx context.Context, metric string) float64 {
	v, _ := scrape(ctx, sp.agent.URL("/metrics"), metric, map[string]string{"proxy": sp.name})
	return v
}

// applied waits until every pool of sp writes to its new master. switchOf
// returns the switch that sp acts on for shard i, if it has come yet. It
// returns the first and last of those switches and when the last pool was
// on its new master.
func (st *stormStack) applied(ctx context.Context, sp *stormProxy, b int, switchOf func(i int) (switchEvent, bool)) (first, last, all time.Time, err error) {
	n := len(st.shards)
	switches := make([]switchEvent, n)
	applied := make([]time.Time, n)
	done := make([]bool, n)
	remaining := n
	deadline := time.Now().Add(90 * time.Second)
	for remaining > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		var mu sync.Mutex
		_ = parallel(n, 64, func(i int) error {
			if done[i] {
				return nil
			}
			if switches[i].At.IsZero() {
				sw, ok := switchOf(i)
				if !ok {
					return nil
				}
				switches[i] = sw
			}
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if st.landsOn(qctx, sp, i, switches[i].New, fmt.Sprintf("b%d", b)) == nil {
				mu.Lock()
				applied[i], done[i] = time.Now(), true
				remaining--
				mu.Unlock()
			}
			return nil
		})
		sleep(ctx, 10*time.Millisecond)
	}
	if remaining > 0 {
		sp.fromFirst.failed++
		return first, last, all, fmt.Errorf("storm %s burst %d: %d of %d pools not on their new master after 90s", sp.name, b+1, remaining, n)
	}
	first, last, all = switches[0].At, switches[0].At, applied[0]
	for i := range n {
		first = minTime(first, switches[i].At)
		last = maxTime(last, switches[i].At)
		all = maxTime(all, applied[i])
	}
	return first, last, all, nil
}

// record waits until sp's restart counter has been still for two seconds (a
// trailing run counts too) and records the burst's figures.
func (st *stormStack) record(ctx context.Context, sp *stormProxy, b int, before float64, first, last, all time.Time) {
	var after float64
	still := time.Now()
	for wait := time.Now().Add(20 * time.Second); time.Now().Before(wait) && time.Since(still) < 2*time.Second; {
		if v := sp.counter(ctx, "redis_consul_agent_twemproxy_restarts_total"); v != after {
			after, still = v, time.Now()
		}
		sleep(ctx, 200*time.Millisecond)
	}
	sp.spread.add(ms(last.Sub(first)))
	sp.restarts.add(after - before)
	sp.fromFirst.add(ms(all.Sub(first)))
	sp.fromLast.add(ms(all.Sub(last)))
	st.e.logf("storm %s burst %d: +switch-master spread over %s; %v restarts; all applied %s after the first switch, %s after the last",
		sp.name, b+1, last.Sub(first).Round(time.Millisecond), after-before, all.Sub(first).Round(time.Millisecond), all.Sub(last).Round(time.Millisecond))
}

// burst fails every master over at once and measures both agents.
func (st *stormStack) burst(ctx context.Context, b int) error {
	e := st.e
	n := len(st.shards)
	natural, dense := st.proxies[0], st.proxies[1]
	before := map[*stormProxy][2]float64{}
	for _, sp := range st.proxies {
		before[sp] = [2]float64{sp.counter(ctx, "redis_consul_agent_twemproxy_restarts_total"), sp.counter(ctx, "redis_consul_agent_twemproxy_rollbacks_total")}
	}
	olds := append([]string(nil), st.masters...)

	if err := dense.agent.Pause(); err != nil {
		return err
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = dense.agent.Resume()
		}
	}
	defer resume()
	trigger := time.Now()
	ns := len(st.sentinels)
	var wg sync.WaitGroup
	errs := make([]error, ns)
	for si, s := range st.sentinels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := si; i < n; i += ns {
				if err := e.failover(ctx, s, st.shards[i].Name); err != nil {
					errs[si] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	e.logf("storm burst %d: %d SENTINEL FAILOVERs asked in %s; agent %q frozen", b+1, n, time.Since(trigger).Round(time.Millisecond), dense.name)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	first := func(i int) (switchEvent, bool) { return st.watch.first(st.shards[i].Name, olds[i], trigger) }
	nFirst, nLast, nAll, err := st.applied(ctx, natural, b, first)
	if err != nil {
		return err
	}
	// Every switch is published and sits in the frozen agent's sockets
	// (every Sentinel has published it, or the first has at least for a
	// while): resume it.
	sleep(ctx, time.Until(nLast.Add(500*time.Millisecond)))
	frozen := time.Since(trigger)
	resumedAt := time.Now()
	resume()
	e.logf("storm burst %d: agent %q resumed after %s frozen", b+1, dense.name, frozen.Round(time.Millisecond))
	atResume := func(i int) (switchEvent, bool) {
		sw, ok := first(i)
		sw.At = resumedAt
		return sw, ok
	}
	dFirst, dLast, dAll, err := st.applied(ctx, dense, b, atResume)
	if err != nil {
		return err
	}
	st.record(ctx, natural, b, before[natural][0], nFirst, nLast, nAll)
	st.record(ctx, dense, b, before[dense][0], dFirst, dLast, dAll)
	for _, sp := range st.proxies {
		sp.rollbacks += int(sp.counter(ctx, "redis_consul_agent_twemproxy_rollbacks_total") - before[sp][1])
	}
	for i := range n {
		sw, _ := first(i)
		st.masters[i] = sw.New
	}
	// Settle every shard before the next burst.
	return parallel(n, 16, func(i int) error {
		sh := st.shards[i]
		nodes := []string{sh.Master.Addr(), sh.Replicas[0].Addr()}
		return e.waitSettled(ctx, sh.Name, st.sentinels, nodes, st.masters[i], 120*time.Second)
	})
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
