package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestHandoffWaitsForLiveOldMaster: the old master's agent is cut off from
// its Consul agent just before a planned failover, so it cannot withdraw the
// master tag, while the old master itself stays alive (Sentinel turns it
// into a replica). The promoted node must not take the master tag while
// Consul still answers the live old master: DNS, sampled every few
// milliseconds from the cut until it answers the new master, never answers
// two nodes. The old registration leaves when its agent's heartbeat TTL
// expires, and only then the new master is tagged. Found by the chaos
// campaign (two live masters in DNS for 1.3 s); it fails without the wait.
func TestHandoffWaitsForLiveOldMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, consul, admin := consulStack(t)
	// The shard is named as the start-up test's, whose steady-state check
	// this test shares.
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "startup", Replicas: 2, FailoverTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	links := map[string]*sandbox.Link{}
	for _, r := range shard.Nodes() {
		l, err := c.NewLink(consul.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		links[r.Addr()] = l
		cfg := agentConfig(consul, shard, r, r.Name())
		cfg["consul"] = map[string]any{"address": l.Addr(), "ttl": "3s"}
		cfg["timing"] = map[string]any{"tick": "250ms", "consul_resync": "500ms", "master_handoff": "300ms"}
		if _, err := c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	old, err := startupSteady(ctx, shard, admin)
	if err != nil {
		t.Fatal(err)
	}

	links[old.Addr()].Cut(true)
	cut := time.Now()
	watch := startupWatch(ctx, consul, "", "startup-master.redis.service.consul", "master.redis.service.consul")
	if _, err := sandbox.Do(ctx, shard.Sentinels[0].Addr(), "SENTINEL", "FAILOVER", shard.Name); err != nil {
		watch.stop()
		t.Fatal(err)
	}
	newAddr, err := shard.WaitFailover(ctx, old.Addr())
	if err != nil {
		watch.stop()
		t.Fatal(err)
	}
	nu := shard.Node(newAddr)
	var tagged time.Duration
	err = sandbox.Poll(ctx, "DNS to answer only the new master "+newAddr, func(ctx context.Context) error {
		ips, err := consul.LookupA(ctx, "startup-master.redis.service.consul")
		if err != nil {
			return err
		}
		if !slices.Equal(ips, []string{nu.IP()}) {
			return fmt.Errorf("DNS answers %v", ips)
		}
		tagged = time.Since(cut)
		return nil
	})
	samples, wrong := watch.stop()
	links[old.Addr()].Cut(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d DNS samples; the new master %s answered alone %s after the old master's agent was cut off", samples, newAddr, tagged.Round(time.Millisecond))
	if len(wrong) > 0 {
		t.Fatalf("%d of %d samples answered two nodes, the first: %s", len(wrong), samples, strings.Join(wrong[:min(5, len(wrong))], "; "))
	}
	if samples < 100 {
		t.Fatalf("only %d DNS samples: the test saw too little", samples)
	}
}
