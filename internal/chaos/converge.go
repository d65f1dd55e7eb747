package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// masters asks every Sentinel for each shard's master and returns the ones a
// strict majority of them name.
func (cp *campaign) masters(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, sh := range cp.st.shards {
		m, err := sh.CurrentMaster(ctx)
		if err != nil {
			return nil, err
		}
		out[sh.Name] = m
	}
	return out, nil
}

// converged reports why the stack does not agree with Sentinel yet, or nil.
func (cp *campaign) converged(ctx context.Context) error {
	masters, err := cp.masters(ctx)
	if err != nil {
		return err
	}
	for shard, m := range masters {
		if role, err := cp.client(m).Do(ctx, "ROLE").Slice(); err != nil || len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s: %s named by Sentinel is not master yet (%v %v)", shard, m, role, err)
		}
		r := cp.st.nodeByIP(strings.Split(m, ":")[0])
		answered := 0
		var silent []string
		for _, k := range cp.st.servers {
			ips, err := k.LookupA(ctx, shardTag(shard)+".redis.service.consul")
			if err != nil {
				// A Consul server whose DNS does not answer disagrees with
				// nobody; DNS must be right wherever it answers.
				silent = append(silent, k.NodeName()+": "+err.Error())
				continue
			}
			answered++
			if len(ips) != 1 || r == nil || ips[0] != r.IP() {
				return fmt.Errorf("%s: DNS at %s answers %v, Sentinel names %s", shard, k.NodeName(), ips, m)
			}
		}
		if answered == 0 {
			return fmt.Errorf("%s: no Consul server answers DNS: %s", shard, strings.Join(silent, "; "))
		}
		if len(silent) > 0 {
			cp.note("converge: %s", strings.Join(silent, "; "))
		}
		b, err := os.ReadFile(cp.st.proxyConf)
		if err != nil {
			return err
		}
		if got := parseServers(b)[shard]; got != m {
			return fmt.Errorf("%s: the proxy config names %s, Sentinel %s", shard, got, m)
		}
	}
	cp.w.mu.Lock()
	missing := len(cp.w.tags) < len(masters)
	cp.w.mu.Unlock()
	if missing {
		cp.findTags(ctx, masters)
	}
	for shard, m := range masters {
		cp.w.mu.Lock()
		tag := cp.w.tags[shard]
		cp.w.mu.Unlock()
		if tag == "" {
			return fmt.Errorf("%s: no hash tag of the pool routes to it", shard)
		}
		key := "{" + tag + "}:converge:" + strconv.FormatInt(time.Now().UnixNano(), 10)
		if _, err := sandbox.Do(ctx, cp.st.poolAddr, "SET", key, "1"); err != nil {
			return fmt.Errorf("%s: write through the pool: %w", shard, err)
		}
		if n, err := cp.client(m).Exists(ctx, key).Result(); err != nil || n != 1 {
			return fmt.Errorf("%s: a write through the pool did not land on %s", shard, m)
		}
	}
	if err := cp.haproxyConverged(ctx, masters); err != nil {
		return err
	}
	for _, h := range cp.st.allHosts() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.agent.URL("/healthz"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("agent of %s: %w", h.name, err)
		}
		resp.Body.Close()
	}
	return nil
}

// waitConverged waits up to ConvergeWithin for DNS, the proxy and its file,
// and HAProxy to agree with Sentinel.
func (cp *campaign) waitConverged(ctx context.Context, phase string) error {
	start := time.Now()
	deadline := start.Add(cp.o.ConvergeWithin)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = cp.converged(cctx)
		cancel()
		if last == nil {
			cp.count("convergence checks", 1)
			cp.say("converged (%s) in %s", phase, time.Since(start).Round(time.Millisecond))
			return nil
		}
		time.Sleep(200 * time.Millisecond) // a poll interval, not a wait for an outcome
	}
	if last == nil {
		last = ctx.Err()
	}
	return fmt.Errorf("no convergence (%s) within %s: %w", phase, cp.o.ConvergeWithin, last)
}

// checkWrites looks for every acknowledged write on its shard's final master.
// A missing write is excused when the node that acknowledged it was killed,
// frozen or restarted after it: Redis replicates asynchronously, and on two
// loaded cores a replica can be seconds behind (or in a full resync), so a
// master that dies may take writes of seconds before with it. The campaign's
// Redis fsync every write (appendfsync always), so a restart alone loses
// nothing. What is never excused: a write acknowledged by a node that was not
// killed afterwards — an old master that came back, or the outgoing master
// of a planned failover.
func (cp *campaign) checkWrites(ctx context.Context) {
	defer cp.closeClients()
	masters, err := cp.masters(ctx)
	if err != nil {
		cp.violate("writes", "cannot find the final masters: "+err.Error())
		return
	}
	cp.mu.Lock()
	acks := append([]ack(nil), cp.acks...)
	cp.mu.Unlock()
	byShard := map[string][]ack{}
	for _, a := range acks {
		byShard[a.shard] = append(byShard[a.shard], a)
	}
	lost := map[string]int{}
	excused, inFlight := 0, 0
	for shard, list := range byShard {
		c := cp.client(masters[shard])
		for i := 0; i < len(list); i += 500 {
			chunk := list[i:min(i+500, len(list))]
			keys := make([]string, len(chunk))
			for j, a := range chunk {
				keys[j] = a.key
			}
			vals, err := c.MGet(ctx, keys...).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				cp.violate("writes", fmt.Sprintf("read back from %s: %v", masters[shard], err))
				return
			}
			for j, v := range vals {
				if v != nil {
					continue
				}
				a := chunk[j]
				node := a.node
				if a.via == "proxy" {
					node = cp.proxyServerAt(shard, a.at)
				}
				if cp.killedAfter(node, a.at) {
					excused++
					continue
				}
				if cp.inFailover(shard, node, a.at) {
					inFlight++
					continue
				}
				lost[a.via]++
				if lost[a.via] <= 3 {
					cp.violateAt("writes", fmt.Sprintf("%s acknowledged via %s at %.3fs by %s is not on the final master %s of %s",
						a.key, a.via, a.at.Sub(cp.began).Seconds(), node, masters[shard], shard), a.at)
				}
			}
		}
	}
	cp.count("acknowledged writes checked", len(acks))
	via := map[string]int{}
	for _, a := range acks {
		via[a.via]++
	}
	for v, n := range via {
		cp.count("acknowledged writes checked via "+v, n)
	}
	cp.mu.Lock()
	cp.lost, cp.excused, cp.inFlight = lost, excused, inFlight
	cp.mu.Unlock()
	if n := lost["dns"] + lost["proxy"] + lost["haproxy"]; n > 3 {
		cp.say("%d acknowledged writes lost in all (dns %d, proxy %d, haproxy %d)", n, lost["dns"], lost["proxy"], lost["haproxy"])
	}
}

// inFailover reports whether a write node acknowledged at t was lost to a
// failover Sentinel had under way: every Sentinel still named node at t, and
// one named another master within seconds after. The agent pauses the
// outgoing master's writes from the leader's election on; a write it
// acknowledged just before that which had not reached the replica Sentinel
// promotes is still lost (Sentinel does not wait for the replica to catch
// up, as Redis's own FAILOVER does), and so is one acknowledged by a master
// Sentinel takes for down while it still answers clients. The report
// counts these apart. A write to a node a Sentinel had already replaced at
// t is a violation: the agent routed to an old master.
func (cp *campaign) inFailover(shard, node string, t time.Time) bool {
	for _, addr := range cp.namedAt(shard, t) {
		if addr != node {
			return false
		}
	}
	return cp.replacedWithin(shard, node, t, 5*time.Second)
}

// killedAfter reports whether the Redis at addr was killed, frozen or
// restarted after t.
func (cp *campaign) killedAfter(addr string, t time.Time) bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.ContainsFunc(cp.kills[addr], func(k time.Time) bool {
		return !k.Before(t.Add(-50 * time.Millisecond))
	})
}

// checkLeftovers looks for processes still running from the campaign's
// directory and, when the campaign made the directory, for the directory.
func (cp *campaign) checkLeftovers(removedDir bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), cp.o.Dir) {
			cp.violate("leftovers", fmt.Sprintf("process %d still runs: %s", pid, strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	cp.count("leftover checks", 1)
	if removedDir {
		if _, err := os.Stat(cp.o.Dir); err == nil {
			cp.violate("leftovers", cp.o.Dir+" is still there")
		}
	}
}
