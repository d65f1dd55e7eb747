package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestHandoffWithoutConsulLeader is the chaos campaign's rare two-masters
// case made certain. The Consul server dies during a failover, and the old
// master's agent is cut off from its Consul client, so that its withdrawal
// cannot reach the catalog before the new master's tag (in the campaign the
// two withdrawals raced). With no leader the new master's agent cannot ask
// Consul whether the old master left; a registration made then is taken by
// its local Consul client and reaches the catalog the moment a leader is
// back, while the catalog still holds the old master passing until its TTL
// expires. The agent must not take the master tag while Consul cannot be
// asked, and once it can, must wait for the live old master to leave. DNS (through the new master's Consul client, stale reads
// off) and the health API are sampled every few ms from before the server
// comes back until the new master is alone and a second longer: no sample
// may answer both. On the agent that took the tag at the end of the 500 ms
// handoff whatever Consul said, DNS answered both for seconds.
func TestHandoffWithoutConsulLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "noleader", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	old, next := shard.Master, shard.Replicas[0]
	server, clients := consulPerNode(t, c, shard)
	agents := map[string]*sandbox.Agent{}
	links := map[string]*sandbox.Link{}
	for _, r := range shard.Nodes() {
		k := clients[r.Addr()]
		l, err := c.NewLink(k.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		links[r.Addr()] = l
		cfg := agentConfig(k, shard, r, r.Name())
		cfg["consul"] = map[string]any{"address": l.Addr(), "ttl": "10s"}
		if agents[r.Addr()], err = c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	sc, err := server.Client()
	if err != nil {
		t.Fatal(err)
	}
	waitMasters(ctx, t, sc, old.Addr())

	// The old master's agent is cut off from Consul, the Consul server
	// dies, and Sentinel fails the shard over.
	links[old.Addr()].Cut(true)
	defer links[old.Addr()].Cut(false)
	if err := server.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := shard.AskFailover(ctx, 0); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	got, err := shard.WaitFailover(wctx, old.Addr())
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	if got != next.Addr() {
		t.Fatalf("Sentinel promoted %s, want %s", got, next.Addr())
	}
	// The new master's agent has made its handoff decision: it took the
	// tag into its Consul client's local state, or it is waiting, saying why.
	na := agents[next.Addr()]
	var decided string
	if err := sandbox.Poll(ctx, "the new master's handoff decision", func(ctx context.Context) error {
		body, err := secGet(ctx, na.URL("/v1/status"))
		if err != nil {
			return err
		}
		var st status.Snapshot
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return err
		}
		for _, in := range st.Instances {
			switch {
			case in.Role == "master":
				decided = "took the master tag"
				return nil
			case strings.Contains(in.Why, "master handoff did not complete"):
				decided = "waited: " + in.Why
				return nil
			}
		}
		return fmt.Errorf("instances %+v", st.Instances)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("with no Consul leader, the new master's agent %s", decided)

	s := &sampler{probe: bothProbe(clients[next.Addr()], "noleader-master.redis.service.consul", old.IP(), next.IP())}
	stop := s.start(ctx)
	back := time.Now()
	if err := server.Restart(false); err != nil {
		stop()
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	err = sandbox.Poll(rctx, "the new master alone in consul", func(ctx context.Context) error {
		got, err := passingMasters(ctx, sc)
		if err != nil {
			return err
		}
		if !slices.Equal(got, []string{next.Addr()}) {
			return fmt.Errorf("masters %v", got)
		}
		return nil
	})
	rcancel()
	alone := time.Since(back)
	s.finish(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first, last, both, total := s.result()
	t.Logf("consul server back; new master alone in consul %s later; %d DNS samples", alone.Round(time.Millisecond), total)
	if total < 100 {
		t.Fatalf("only %d DNS samples answered", total)
	}
	if both > 0 {
		t.Fatalf("DNS answered both %s and %s as master in %d of %d samples, from %s to %s after the Consul server's restart began (the new master's agent %s)",
			old.Addr(), next.Addr(), both, total, first.Sub(back).Round(time.Millisecond), last.Sub(back).Round(time.Millisecond), decided)
	}
}

// bothProbe asks a Consul agent's DNS for name: bad when the answer holds
// both a and b.
func bothProbe(dns *sandbox.Consul, name, a, b string) func(context.Context) (bool, bool) {
	return func(ctx context.Context) (bool, bool) {
		ips, err := dns.LookupA(ctx, name)
		if err != nil {
			return false, false
		}
		return slices.Contains(ips, a) && slices.Contains(ips, b), true
	}
}
