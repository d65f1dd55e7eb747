package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
)

// stormStack is figure 4: three Sentinels watching many masters (each with
// one replica) and one agent supervising a twemproxy with one pool per
// master.
type stormStack struct {
	e         *env
	sentinels []*harness.Sentinel
	shards    []*harness.Shard
	masters   []string // current master per shard
	pools     []string // pool listen address per shard
	agent     *agentProc
	watch     *switchWatch

	spread, restarts, fromFirst, fromLast values
	rollbacks                             int
}

func startStorm(ctx context.Context, e *env, n int) (*stormStack, error) {
	st := &stormStack{e: e}
	var err error
	e.logf("storm: starting 3 Sentinels, %d masters and %d replicas", n, n)
	if st.sentinels, err = e.c.StartSentinels(3, harness.SentinelOptions{DownAfter: 5 * time.Second, FailoverTimeout: 5 * time.Second}); err != nil {
		return nil, err
	}
	// Fast hello and INFO so that 2n instances are discovered and settle
	// between bursts in seconds.
	if err := e.sentinelDebug(ctx, st.sentinels, "info-period", "1000", "publish-period", "500"); err != nil {
		return nil, err
	}
	st.shards = make([]*harness.Shard, n)
	if err := parallel(n, 8, func(i int) error {
		sh, err := e.c.StartShard(harness.ShardOptions{Name: fmt.Sprintf("st%03d", i), Replicas: 1, Use: st.sentinels})
		st.shards[i] = sh
		return err
	}); err != nil {
		return nil, err
	}
	st.masters = make([]string, n)
	for i, sh := range st.shards {
		st.masters[i] = sh.Master.Addr()
	}

	ip := e.c.NewIP()
	ports, err := e.freePorts(ip, n+1)
	if err != nil {
		return nil, err
	}
	specs := make([]poolSpec, n)
	st.pools = make([]string, n)
	for i, sh := range st.shards {
		st.pools[i] = addrOf(ip, ports[i])
		specs[i] = poolSpec{fmt.Sprintf("p%03d", i), st.pools[i], st.masters[i], sh.Name}
	}
	dir, err := e.c.ProcessDir("storm-proxy")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nutcracker.yml")
	if err := os.WriteFile(conf, []byte(poolYAML(specs)), 0o644); err != nil {
		return nil, err
	}
	var sentinelAddrs []string
	for _, s := range st.sentinels {
		sentinelAddrs = append(sentinelAddrs, s.Addr())
	}
	e.logf("storm: starting the twemproxy agent with %d pools", n)
	st.agent, err = e.startAgent("agent-storm", ip, map[string]any{
		"node_name": "storm-proxy",
		"sentinel":  map[string]any{"addresses": sentinelAddrs},
		"twemproxy": []any{map[string]any{
			"name": "storm", "config_file": conf, "nutcracker": e.nut,
			"restart": map[string]any{"mode": "supervise", "command": []string{e.nut, "-c", conf, "-s", fmt.Sprint(ports[n]), "-a", ip}},
		}},
	})
	if err != nil {
		return nil, err
	}
	if st.watch, err = watchSwitches(ctx, st.sentinels); err != nil {
		return nil, err
	}
	// Every pool serves its master before the first burst.
	tctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := harness.Poll(tctx, "every storm pool to serve its master", func(ctx context.Context) error {
		return parallel(n, 16, func(i int) error { return st.landsOn(ctx, i, st.masters[i], "ready") })
	}); err != nil {
		return nil, err
	}
	return st, nil
}

func (st *stormStack) close() {
	if st.watch != nil {
		st.watch.close()
	}
}

// landsOn writes a fresh key through pool i and reports whether master has
// it.
func (st *stormStack) landsOn(ctx context.Context, i int, master, tag string) error {
	c, err := dialRESP(ctx, st.pools[i], 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	key := fmt.Sprintf("storm:%s:%d:%d", tag, i, time.Now().UnixNano())
	if _, err := c.do(time.Second, "SET", key, "1"); err != nil {
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

func (st *stormStack) restartCount(ctx context.Context) (float64, error) {
	return scrape(ctx, st.agent.URL("/metrics"), "redis_consul_agent_twemproxy_restarts_total", map[string]string{"proxy": "storm"})
}

// burst fails over every master at once (SENTINEL FAILOVER, spread over the
// three Sentinels) and measures how the agent follows: the restarts it
// takes, and when every pool writes to its new master.
func (st *stormStack) burst(ctx context.Context, b int) error {
	e := st.e
	n := len(st.shards)
	before, err := st.restartCount(ctx)
	if err != nil {
		return err
	}
	rollbacksBefore, _ := scrape(ctx, st.agent.URL("/metrics"), "redis_consul_agent_twemproxy_rollbacks_total", map[string]string{"proxy": "storm"})
	olds := append([]string(nil), st.masters...)
	trigger := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(st.sentinels))
	for si, s := range st.sentinels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := si; i < n; i += len(st.sentinels) {
				if err := e.failover(ctx, s, st.shards[i].Name); err != nil {
					errs[si] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	sent := time.Since(trigger)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}

	// Every switch, then every pool on its new master.
	switches := make([]switchEvent, n)
	applied := make([]time.Time, n)
	done := make([]bool, n)
	deadline := time.Now().Add(60 * time.Second)
	remaining := n
	for remaining > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		var mu sync.Mutex
		_ = parallel(n, 16, func(i int) error {
			if done[i] {
				return nil
			}
			if switches[i].At.IsZero() {
				sw, ok := st.watch.first(st.shards[i].Name, olds[i], trigger)
				if !ok {
					return nil
				}
				switches[i] = sw
			}
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if st.landsOn(qctx, i, switches[i].New, fmt.Sprintf("b%d", b)) == nil {
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
		st.fromFirst.failed++
		st.fromLast.failed++
		return fmt.Errorf("storm burst %d: %d of %d pools not on their new master after 60s", b+1, remaining, n)
	}
	first, last, all := switches[0].At, switches[0].At, applied[0]
	for i := range n {
		if switches[i].At.Before(first) {
			first = switches[i].At
		}
		if switches[i].At.After(last) {
			last = switches[i].At
		}
		if applied[i].After(all) {
			all = applied[i]
		}
		st.masters[i] = switches[i].New
	}
	// Restarts still coming (a trailing run) count too: wait until the
	// counter has been still for two seconds.
	var after float64
	still := time.Now()
	for wait := time.Now().Add(20 * time.Second); time.Now().Before(wait) && time.Since(still) < 2*time.Second; {
		v, err := st.restartCount(ctx)
		if err != nil {
			return err
		}
		if v != after {
			after, still = v, time.Now()
		}
		sleep(ctx, 200*time.Millisecond)
	}
	rollbacksAfter, _ := scrape(ctx, st.agent.URL("/metrics"), "redis_consul_agent_twemproxy_rollbacks_total", map[string]string{"proxy": "storm"})
	st.rollbacks += int(rollbacksAfter - rollbacksBefore)
	st.spread.add(ms(last.Sub(first)))
	st.restarts.add(after - before)
	st.fromFirst.add(ms(all.Sub(first)))
	st.fromLast.add(ms(all.Sub(last)))
	e.logf("storm burst %d: %d failovers asked in %s; switches spread over %s; %v restarts; all applied %s after the first switch, %s after the last",
		b+1, n, sent.Round(time.Millisecond), last.Sub(first).Round(time.Millisecond), after-before,
		all.Sub(first).Round(time.Millisecond), all.Sub(last).Round(time.Millisecond))

	// Settle every shard before the next burst.
	return parallel(n, 16, func(i int) error {
		sh := st.shards[i]
		nodes := []string{sh.Master.Addr(), sh.Replicas[0].Addr()}
		return e.waitSettled(ctx, sh.Name, st.sentinels, nodes, st.masters[i], 120*time.Second)
	})
}
