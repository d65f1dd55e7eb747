package integration

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The HAProxy of the Docker stack (rca-haproxy): one frontend per shard,
// named after the shard, listening on 6380 (shard-a) and 6381 (shard-b) in
// the container and published on RCA_HAPROXY_A_PORT / RCA_HAPROXY_B_PORT;
// the agent beside it drives it through the runtime socket (entry "edge").

// haproxyPorts are the frontends' ports inside the container, by shard.
var haproxyPorts = map[string]int{"shard-a": 6380, "shard-b": 6381}

// haproxyFrontend is the published address of the shard's frontend.
func (s *composeStack) haproxyFrontend(shard string) string {
	return "127.0.0.1:" + s.ports.haproxy[shard]
}

// haproxyStatus is the HAProxy entry of the status API of the agent in the
// HAProxy container, which the test reaches on the stack's network.
func (s *composeStack) haproxyStatus(ctx context.Context) (status.HAProxyStatus, error) {
	var st status.Snapshot
	if err := s.getJSON(ctx, "http://"+net.JoinHostPort(s.ip("haproxy"), "8765")+"/v1/status", &st); err != nil {
		return status.HAProxyStatus{}, err
	}
	if len(st.HAProxy) != 1 {
		return status.HAProxyStatus{}, fmt.Errorf("status of the HAProxy agent: %d haproxy entries, want 1", len(st.HAProxy))
	}
	return st.HAProxy[0], nil
}

// haproxyFollows reports whether HAProxy's server of the shard points at want
// (as the agent reads HAProxy's state), and whether the shard's frontend is
// registered in Consul at the HAProxy container with a passing check.
func (s *composeStack) haproxyFollows(ctx context.Context, shard, want string) (bool, string) {
	h, err := s.haproxyStatus(ctx)
	if err != nil {
		return false, err.Error()
	}
	if !h.Reachable {
		return false, fmt.Sprintf("the agent cannot reach HAProxy's runtime API %s: %s", h.RuntimeAPI, h.LastError)
	}
	i := slices.IndexFunc(h.Servers, func(sv status.HAProxyServer) bool { return sv.MasterName == shard })
	if i < 0 {
		return false, fmt.Sprintf("no HAProxy server follows %s: %+v", shard, h.Servers)
	}
	if sv := h.Servers[i]; sv.Addr != want || !sv.Matches || !sv.Ready {
		return false, fmt.Sprintf("HAProxy %s/%s at %s (matches=%v ready=%v up=%v %s), want %s", sv.Backend, sv.Server, sv.Addr, sv.Matches, sv.Ready, sv.Up, sv.Why, want)
	}
	entries, _, err := s.consul.Health().Service("haproxy", "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Sprintf("consul: %v", err)
	}
	for _, e := range entries {
		if !slices.Contains(e.Service.Tags, shard) {
			continue
		}
		if e.Service.Address != s.ip("haproxy") || e.Service.Port != haproxyPorts[shard] {
			return false, fmt.Sprintf("consul: frontend %s at %s:%d, want %s:%d", shard, e.Service.Address, e.Service.Port, s.ip("haproxy"), haproxyPorts[shard])
		}
		if st := e.Checks.AggregatedStatus(); st != api.HealthPassing {
			return false, "consul: frontend " + describe(e)
		}
		return true, ""
	}
	return false, fmt.Sprintf("consul: no haproxy instance tagged %s among %d", shard, len(entries))
}

// writeThroughHAProxy sets n keys through the shard's frontend and checks
// that every one landed on master, which answers ROLE master.
func (s *composeStack) writeThroughHAProxy(ctx context.Context, shard, prefix string, n int, master string) (bool, string) {
	for i := range n {
		k := fmt.Sprintf("%s:%d", prefix, i)
		if v, err := sandbox.Do(ctx, s.haproxyFrontend(shard), "SET", k, fmt.Sprint(i)); err != nil || v != "OK" {
			return false, fmt.Sprintf("SET %s through HAProxy's %s frontend: %v %v", k, shard, v, err)
		}
	}
	if role := redisRole(ctx, master); role != "master" {
		return false, fmt.Sprintf("%s answers ROLE %q, want master", master, role)
	}
	c := redis.NewClient(&redis.Options{Addr: master, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	held := 0
	for i := range n {
		if c.Exists(ctx, fmt.Sprintf("%s:%d", prefix, i)).Val() == 1 {
			held++
		}
	}
	if held != n {
		return false, fmt.Sprintf("of %d keys written through HAProxy's %s frontend the master %s holds %d", n, shard, master, held)
	}
	return true, ""
}

// checkHAProxy: the HAProxy container follows every failover the test made so
// far; writes through each frontend land on the shard's master; its agent's
// frontends are in Consul and it is scraped. Then, with a writer through the
// shard's frontend, it stops the shard's master as StopMaster does (the old
// master comes back as a master until Sentinel demotes it): HAProxy follows
// the new master, writes through it land there, the frontend's Consul check
// is passing, and no write HAProxy acknowledged is missing on the final master.
func (s *composeStack) checkHAProxy(ctx context.Context, t *testing.T, shard string) {
	if out, err := s.docker(ctx, "exec", "rca-haproxy", "haproxy", "-v"); err != nil || !strings.Contains(out, "version 2.6.") {
		t.Errorf("haproxy -v in rca-haproxy: %q %v, want HAProxy 2.6 (Debian bookworm's)", strings.SplitN(out, "\n", 2)[0], err)
	}
	for _, sh := range []string{"shard-a", "shard-b"} {
		m, views := s.sentinelTruth(ctx, sh)
		if m == "" {
			t.Fatalf("no Sentinel majority for %s: %s", sh, views)
		}
		waitFor(ctx, t, 30*time.Second, "HAProxy's "+sh+" server on the master "+s.host(m)+", its frontend passing in Consul", func(ctx context.Context) (bool, string) {
			return s.haproxyFollows(ctx, sh, m)
		})
		waitFor(ctx, t, 15*time.Second, "writes through HAProxy's "+sh+" frontend land on its master", func(ctx context.Context) (bool, string) {
			return s.writeThroughHAProxy(ctx, sh, "ha-steady-"+sh, 20, m)
		})
	}
	waitFor(ctx, t, 15*time.Second, "haproxy.service.consul SRV names both frontends", func(ctx context.Context) (bool, string) {
		_, srvs, err := s.dns.LookupSRV(ctx, "", "", "haproxy.service.consul.")
		var ports []int
		for _, r := range srvs {
			ports = append(ports, int(r.Port))
		}
		slices.Sort(ports)
		return err == nil && slices.Equal(ports, []int{6380, 6381}), fmt.Sprintf("SRV ports %v %v, want [6380 6381]", ports, err)
	})
	waitFor(ctx, t, 30*time.Second, "Prometheus scrapes HAProxy and its agent", func(ctx context.Context) (bool, string) {
		for _, q := range []string{
			`redis_consul_agent_haproxy_up{instance="haproxy:8765",haproxy="edge"} == 1`,
			`redis_consul_agent_haproxy_servers_mismatched{instance="haproxy:8765",haproxy="edge"} == 0`,
			`up{job="haproxy"} == 1`,
			`count(haproxy_backend_active_servers{proxy=~"shard-a|shard-b"}) == 2`,
		} {
			if _, vals, err := s.promQuery(ctx, q); err != nil || len(vals) != 1 {
				return false, fmt.Sprintf("%s: %v %v", q, vals, err)
			}
		}
		return true, ""
	})

	w := s.startHAProxyWriter(ctx, shard)
	started := time.Now()
	s.checkStopMaster(ctx, t, shard) // the same stop, failover and return as its own subtest
	final, views := s.sentinelTruth(ctx, shard)
	if final == "" {
		w.stop()
		t.Fatalf("no Sentinel majority for %s after the failover: %s", shard, views)
	}
	// Writes first: they fail on their own when HAProxy was not moved.
	waitFor(ctx, t, 15*time.Second, "writes through HAProxy land on the new master "+s.host(final), func(ctx context.Context) (bool, string) {
		return s.writeThroughHAProxy(ctx, shard, "ha-after-"+shard, 20, final)
	})
	acked := w.stop()
	waitFor(ctx, t, 30*time.Second, "HAProxy's "+shard+" server on the new master, its frontend passing in Consul", func(ctx context.Context) (bool, string) {
		return s.haproxyFollows(ctx, shard, final)
	})
	moved := started
	if h, err := s.haproxyStatus(ctx); err == nil && h.LastMove != nil {
		moved = h.LastMove.At
		t.Logf("HAProxy: last move %s %s → %s %s after the writer started (agent reaction %s); %d moves, %d reconciles",
			h.LastMove.Server, h.LastMove.From, h.LastMove.To, h.LastMove.At.Sub(started).Round(time.Millisecond),
			h.LastMove.Reaction.Round(time.Microsecond), h.Moves, h.Reconciles)
	}
	missing, err := missingOn(ctx, final, acked)
	if err != nil {
		t.Fatal(err)
	}
	after, gap := w.ackedAfter(moved)
	t.Logf("writer through HAProxy's %s frontend: %d attempts, %d acknowledged (%d after the move), %d failed, longest gap between acknowledgements %s; acknowledged but missing on the final master %s: %d",
		shard, w.attempts, len(acked), after, w.failed, gap.Round(time.Millisecond), s.host(final), len(missing))
	if len(missing) > 0 {
		t.Errorf("%d writes acknowledged through HAProxy are missing on the final master %s, e.g. %v", len(missing), final, missing[:min(5, len(missing))])
	}
	if after == 0 {
		t.Errorf("no write through HAProxy's %s frontend was acknowledged after HAProxy moved to %s", shard, final)
	}
}

// haproxyWriter writes distinct keys through one HAProxy frontend, a new
// connection for each, every ~20ms, and keeps the ones acknowledged.
type haproxyWriter struct {
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	acked    []string
	ackedAt  []time.Time
	attempts int
	failed   int
}

func (s *composeStack) startHAProxyWriter(ctx context.Context, shard string) *haproxyWriter {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute) // bounds the writer whatever happens
	w := &haproxyWriter{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 20000; i++ {
			k := fmt.Sprintf("ha-writer-%s:%d", shard, i)
			wctx, wcancel := context.WithTimeout(ctx, time.Second)
			v, err := sandbox.Do(wctx, s.haproxyFrontend(shard), "SET", k, "1")
			wcancel()
			w.mu.Lock()
			w.attempts++
			if err == nil && v == "OK" {
				w.acked = append(w.acked, k)
				w.ackedAt = append(w.ackedAt, time.Now())
			} else {
				w.failed++
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// stop ends the writer and returns the keys HAProxy acknowledged.
func (w *haproxyWriter) stop() []string {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

// ackedAfter counts the writes acknowledged after t, and returns the longest
// time without an acknowledgement: the write outage HAProxy's clients saw.
func (w *haproxyWriter) ackedAfter(t time.Time) (int, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	var gap time.Duration
	for i, at := range w.ackedAt {
		if at.After(t) {
			n++
		}
		if i > 0 {
			gap = max(gap, at.Sub(w.ackedAt[i-1]))
		}
	}
	return n, gap
}

// missingOn returns the keys the Redis at addr does not hold.
func missingOn(ctx context.Context, addr string, keys []string) ([]string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 5 * time.Second})
	defer c.Close()
	var missing []string
	for chunk := range slices.Chunk(keys, 500) {
		cmds := make([]*redis.IntCmd, len(chunk))
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range chunk {
				cmds[i] = p.Exists(ctx, k)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading the acknowledged keys back from %s: %w", addr, err)
		}
		for i, cmd := range cmds {
			if cmd.Val() != 1 {
				missing = append(missing, chunk[i])
			}
		}
	}
	return missing, nil
}
