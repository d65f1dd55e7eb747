package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// idleResult is figure 5 for one agent size.
type idleResult struct {
	size                  int
	rssMB, cpuPct, reqsPS values
	meanCPU, meanReqs     float64
	measured              time.Duration
	byKind                map[string]int
	window                time.Duration
}

// idleStack is figure 5: shards of a master and a replica watched by three
// Sentinels, and one agent at a time registering 1, 10 or 50 of the Redis
// as its local instances, with default timings.
type idleStack struct {
	e         *env
	sentinels []*sandbox.Sentinel
	nodes     []*sandbox.Redis // master, replica, master, replica, ...
	shardOf   map[string]string
	results   []*idleResult
}

func startIdle(ctx context.Context, e *env, maxSize int) (*idleStack, error) {
	st := &idleStack{e: e, shardOf: map[string]string{}}
	shards := (maxSize + 1) / 2
	e.logf("idle: starting 3 Sentinels and %d shards of a master and a replica", shards)
	var err error
	if st.sentinels, err = e.c.StartSentinels(3, sandbox.SentinelOptions{DownAfter: 5 * time.Second, FailoverTimeout: 10 * time.Second}); err != nil {
		return nil, err
	}
	// Hello messages every 500ms only to discover the Sentinels quickly;
	// set back to Sentinel's default before anything is measured.
	if err := e.sentinelDebug(ctx, st.sentinels, "publish-period", "500"); err != nil {
		return nil, err
	}
	all := make([]*sandbox.Shard, shards)
	if err := parallel(shards, 8, func(i int) error {
		sh, err := e.c.StartShard(sandbox.ShardOptions{Name: fmt.Sprintf("idle%02d", i), Replicas: 1, Use: st.sentinels})
		all[i] = sh
		return err
	}); err != nil {
		return nil, err
	}
	if err := e.sentinelDebug(ctx, st.sentinels, "publish-period", "2000"); err != nil {
		return nil, err
	}
	for _, sh := range all {
		for _, n := range sh.Nodes() {
			st.nodes = append(st.nodes, n)
			st.shardOf[n.Addr()] = sh.Name
		}
	}
	return st, nil
}

// measure runs one agent with size local Redis for d after a warm-up, and
// samples its RSS every second, its CPU time and its Consul requests in six
// windows.
func (st *idleStack) measure(ctx context.Context, size int, warmup, d time.Duration) (*idleResult, error) {
	e := st.e
	var sentinelAddrs []string
	for _, s := range st.sentinels {
		sentinelAddrs = append(sentinelAddrs, s.Addr())
	}
	var redis []any
	var ids []string
	for _, n := range st.nodes[:size] {
		redis = append(redis, map[string]any{"address": n.Addr(), "master_name": st.shardOf[n.Addr()]})
		ids = append(ids, fmt.Sprintf("redis-%s-%d", n.IP(), n.Port()))
	}
	name := fmt.Sprintf("agent-idle-%d", size)
	a, err := e.startAgent(name, e.c.NewIP(), map[string]any{
		"node_name": name,
		"sentinel":  map[string]any{"addresses": sentinelAddrs},
		"redis":     redis,
	})
	if err != nil {
		return nil, err
	}
	defer a.Stop()
	client, err := e.consul.Client()
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := sandbox.Poll(wctx, fmt.Sprintf("%d services of %s passing", size, name), func(ctx context.Context) error {
		checks, _, err := client.Health().State(api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		passing := 0
		for _, c := range checks {
			if slices.Contains(ids, c.ServiceID) {
				passing++
			}
		}
		if passing < size {
			return fmt.Errorf("%d of %d passing", passing, size)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	sleep(ctx, warmup)

	res := &idleResult{size: size, window: max(d/6, time.Second), byKind: map[string]int{}}
	res.rssMB.unit, res.cpuPct.unit, res.reqsPS.unit = "MB", "% core", "req/s"
	pid := a.Pid()
	start := time.Now()
	cpu0, err := procCPU(pid)
	if err != nil {
		return nil, err
	}
	winStart, winCPU := start, cpu0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for w := 0; w < 6 && ctx.Err() == nil; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		if rss, err := procRSS(pid); err == nil {
			res.rssMB.add(float64(rss) / (1 << 20))
		}
		now := time.Now()
		if now.Sub(winStart) < res.window {
			continue
		}
		cpu, err := procCPU(pid)
		if err != nil {
			return nil, err
		}
		el := now.Sub(winStart)
		res.cpuPct.add(100 * float64(cpu-winCPU) / float64(el))
		res.reqsPS.add(float64(total(a.counter.count(winStart, now))) / el.Seconds())
		winStart, winCPU = now, cpu
		w++
	}
	end := winStart
	el := end.Sub(start)
	res.meanCPU = 100 * float64(winCPU-cpu0) / float64(el)
	res.byKind = a.counter.count(start, end)
	res.meanReqs = float64(total(res.byKind)) / el.Seconds()
	res.measured = el
	e.logf("idle %d Redis: RSS p50 %.1f MB, CPU %.2f%% of a core, %.2f Consul req/s %v over %s",
		size, res.rssMB.summary().P50, res.meanCPU, res.meanReqs, res.byKind, el.Round(time.Second))
	st.results = append(st.results, res)
	return res, nil
}
