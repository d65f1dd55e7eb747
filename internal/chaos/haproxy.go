package chaos

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// twoServersGrace is how long HAProxy may hold sessions of one shard on two
// live masters before it is a violation: the agent's move is `set server
// addr`, `state ready`, then `shutdown sessions`, a few runtime API round
// trips in which a sample can see both.
const twoServersGrace = 250 * time.Millisecond

// sampleHAProxy reads HAProxy's runtime state: which server each shard's
// backend sends new connections to (kept as a note for timelines), and where
// its open sessions go. A shard's traffic going to two nodes that both answer
// ROLE master (open sessions on one, new connections to the other, or
// sessions on both) for longer than twoServersGrace is a violation: HAProxy
// sends the shard's writes to two masters.
func (cp *campaign) sampleHAProxy(ctx context.Context) {
	hap := cp.st.hap
	if !hap.Alive() {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	servers, err := hap.Servers(cctx)
	if err != nil {
		return
	}
	cp.count("haproxy state samples", 1)
	for _, sh := range cp.st.shards {
		line := "absent"
		if s, ok := haproxyServer(servers, sh.Name); ok {
			line = fmt.Sprintf("%s op %d admin %d", s.Addr, s.OpState, s.AdminState)
		}
		cp.w.mu.Lock()
		changed := cp.w.hapServer[sh.Name] != line
		cp.w.hapServer[sh.Name] = line
		cp.w.mu.Unlock()
		if changed {
			cp.note("haproxy %s/%s: %s", backendOf(sh.Name), sh.Name, line)
		}
	}
	sessions, err := hap.Sessions(cctx)
	if err != nil {
		return
	}
	cp.count("haproxy session samples", 1)
	for _, sh := range cp.st.shards {
		var addrs []string
		if s, ok := haproxyServer(servers, sh.Name); ok && s.TakesTraffic() {
			addrs = append(addrs, s.Addr)
		}
		for _, s := range sessions {
			if s.Backend == backendOf(sh.Name) {
				addrs = append(addrs, s.Addr)
			}
		}
		slices.Sort(addrs)
		addrs = slices.Compact(addrs)
		live := 0
		if len(addrs) > 1 {
			var ips []string
			for _, a := range addrs {
				host, _, _ := net.SplitHostPort(a)
				ips = append(ips, host)
			}
			live = cp.liveMasters(ctx, ips)
		}
		now := time.Now()
		cp.w.mu.Lock()
		since := cp.w.twoSince[sh.Name]
		switch {
		case live < 2:
			delete(cp.w.twoSince, sh.Name)
		case since.IsZero():
			cp.w.twoSince[sh.Name], since = now, now
		}
		cp.w.mu.Unlock()
		if live > 1 && since.Equal(now) {
			cp.count("haproxy traffic to two masters within the grace", 1)
			cp.note("haproxy %s: traffic to %s", backendOf(sh.Name), strings.Join(addrs, ", "))
		}
		cp.sampleVerdict(sh.Name, "haproxy-two-servers", live > 1 && now.Sub(since) >= twoServersGrace,
			fmt.Sprintf("HAProxy backend %s sends to %d live masters [%s] (its server and its open sessions) for %s", backendOf(sh.Name), live, strings.Join(addrs, ", "), now.Sub(since).Round(time.Millisecond)))
	}
}

// haproxyServer finds the server that follows shard in its backend.
func haproxyServer(servers []sandbox.HAProxyServerState, shard string) (sandbox.HAProxyServerState, bool) {
	for _, s := range servers {
		if s.Backend == backendOf(shard) && s.Server == shard {
			return s, true
		}
	}
	return sandbox.HAProxyServerState{}, false
}

// writeHAProxy writes unique keys through the shard's HAProxy frontend
// every 15ms, as an application's pool does: one connection kept for up to
// three seconds, so that sessions HAProxy leaves open on an old master show
// (the session check needs them to outlive its grace; a connection kept
// one second was renewed within the grace of a wrong move now and then). On
// each new connection it asks CLIENT INFO which Redis HAProxy connected it
// to, and every acknowledged write records that node.
func (cp *campaign) writeHAProxy(ctx context.Context, shard string) {
	var node atomic.Value
	node.Store("")
	c := redis.NewClient(&redis.Options{
		Addr: cp.st.hap.Frontends[backendOf(shard)], Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1,
		ConnMaxLifetime: 3 * time.Second, DialTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond,
		OnConnect: func(ctx context.Context, cn *redis.Conn) error {
			info, err := cn.ClientInfo(ctx).Result()
			if err != nil {
				return err
			}
			node.Store(info.LAddr)
			return nil
		},
	})
	defer c.Close()
	t := time.NewTicker(15 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		key := nextKey("chaos:" + shard + ":haproxy")
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := c.Set(cctx, key, "1", 0).Err()
		cancel()
		if err != nil {
			continue
		}
		// One connection at a time and no retries: the write went over the
		// connection whose CLIENT INFO set node.
		at := time.Now()
		cp.mu.Lock()
		cp.acks = append(cp.acks, ack{key: key, shard: shard, node: node.Load().(string), via: "haproxy", at: at})
		cp.mu.Unlock()
	}
}

// haproxyConverged reports why HAProxy does not agree with Sentinel yet, or
// nil: each shard's server is at the master Sentinel names and takes
// traffic, per `show servers state`, and a write through each frontend lands
// on that master.
func (cp *campaign) haproxyConverged(ctx context.Context, masters map[string]string) error {
	servers, err := cp.st.hap.Servers(ctx)
	if err != nil {
		return fmt.Errorf("haproxy runtime API: %w", err)
	}
	for shard, m := range masters {
		s, ok := haproxyServer(servers, shard)
		switch {
		case !ok:
			return fmt.Errorf("%s: no server %s/%s in HAProxy", shard, backendOf(shard), shard)
		case s.Addr != m:
			return fmt.Errorf("%s: HAProxy's %s/%s is at %s, Sentinel names %s", shard, backendOf(shard), shard, s.Addr, m)
		case !s.TakesTraffic():
			return fmt.Errorf("%s: HAProxy's %s/%s at %s takes no traffic (op state %d, admin state %d)", shard, backendOf(shard), shard, s.Addr, s.OpState, s.AdminState)
		}
		key := "chaos:" + shard + ":haproxy-converge:" + strconv.FormatInt(time.Now().UnixNano(), 10)
		if _, err := sandbox.Do(ctx, cp.st.hap.Frontends[backendOf(shard)], "SET", key, "1"); err != nil {
			return fmt.Errorf("%s: write through HAProxy: %w", shard, err)
		}
		if n, err := cp.client(m).Exists(ctx, key).Result(); err != nil || n != 1 {
			return fmt.Errorf("%s: a write through HAProxy did not land on %s", shard, m)
		}
	}
	return nil
}
