package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestStalledAgentDoesNotReviveOldMaster: the old master's agent is frozen
// (SIGSTOP) past its heartbeat TTL, so Consul turns its checks critical and
// DNS drops the old master, and it is cut off from every Sentinel; a
// planned failover promotes the replica, whose agent takes the master tag.
// The old master is still a live master (its own agent would have made it
// a replica, and Sentinel converts it only later). The frozen agent
// resumes with no Sentinel truth: it must neither revive the registration
// it held before the freeze, master tag and all, nor keep "the master tag
// it holds", because Consul took it away while it was frozen. Found by the
// chaos campaign (seed 5): DNS answered both masters for 557 ms, from 21 ms
// after the agent's SIGCONT, while its truth was stale.
func TestStalledAgentDoesNotReviveOldMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, consul, admin := consulStack(t)
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "stall", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	old, promoted := shard.Master, shard.Replicas[0]
	// The old master's agent reaches the Sentinels through links the test
	// cuts; a grace long enough that guardStale does not end the test's
	// window (the campaign's freeze, 2.9 s, was within the default 5 s).
	var links []*sandbox.Link
	var via []string
	for _, sn := range shard.Sentinels {
		l, err := c.NewLink(sn.Addr())
		if err != nil {
			t.Fatal(err)
		}
		links, via = append(links, l), append(via, l.Addr())
	}
	agents := map[*sandbox.Redis]*sandbox.Agent{}
	for _, r := range shard.Nodes() {
		cfg := agentConfig(consul, shard, r, r.Name())
		if r == old {
			cfg["sentinel"] = map[string]any{"addresses": via}
			cfg["timing"].(map[string]any)["stale_master_grace"] = "60s"
		}
		if agents[r], err = c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	const dnsName = "stall-master.redis.service.consul"
	secWaitDNS(ctx, t, consul, dnsName, old.IP())
	secWaitHealth(ctx, t, admin, "redis", secRedisID(promoted), api.HealthPassing)

	// Frozen past its TTL (2 s): Consul turns the heartbeat, and with it
	// every check aliasing it, critical.
	if err := agents[old].Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	for _, l := range links {
		l.Cut(true)
	}
	pollDNS(ctx, t, consul, dnsName, "the frozen agent's master leaving DNS", func(ips []string) bool { return len(ips) == 0 })
	t.Logf("the old master left DNS %s after its agent froze", time.Since(paused).Round(time.Millisecond))
	if err := shard.AskFailover(ctx, 0); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	err = promoted.WaitRole(pctx, "master")
	pcancel()
	if err != nil {
		t.Fatal(err)
	}
	secWaitDNS(ctx, t, consul, dnsName, promoted.IP())
	if role, err := old.Role(ctx); err != nil || role != "master" {
		t.Fatalf("the old master should still be a live master while its agent is frozen: role %q, %v", role, err)
	}

	w := startupWatch(ctx, consul, "", dnsName, "master.redis.service.consul")
	resumed := time.Now()
	if err := agents[old].Resume(); err != nil {
		w.stop()
		t.Fatal(err)
	}
	// Until the resumed agent has published a decision made without a
	// Sentinel truth (before the freeze it said "confirmed by Sentinel"),
	// and for a second more.
	var last string
	err = sandbox.Poll(ctx, "the resumed agent's decision without a Sentinel truth", func(ctx context.Context) error {
		es, _, err := admin.Health().Service("redis", "", false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		for _, e := range es {
			if e.Service.ID != secRedisID(old) {
				continue
			}
			for _, ck := range e.Checks {
				if ck.CheckID == "service:"+secRedisID(old) {
					last = fmt.Sprintf("tags %v, %s: %s", e.Service.Tags, ck.Status, ck.Output)
				}
			}
			if !strings.Contains(last, "Sentinel truth") || time.Since(resumed) < time.Second {
				return fmt.Errorf("old master: %s", last)
			}
			return nil
		}
		return fmt.Errorf("no registration of %s", secRedisID(old))
	})
	samples, wrong := w.stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(wrong) > 0 {
		t.Fatalf("DNS answered two masters in %d of %d samples after the frozen agent resumed: %v", len(wrong), samples, wrong[:min(len(wrong), 5)])
	}
	if strings.Contains(last, "[master") {
		t.Fatalf("the resumed agent kept the master tag Consul took away while it was frozen: %s", last)
	}
	t.Logf("the old master's agent resumed cut off from Sentinel: %s; %d DNS samples, never two masters", last, samples)
}

// pollDNS waits until name's answer satisfies ok.
func pollDNS(ctx context.Context, t *testing.T, consul *sandbox.Consul, name, what string, ok func([]string) bool) {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := sandbox.Poll(pctx, what, func(ctx context.Context) error {
		ips, err := consul.LookupA(ctx, name)
		if err != nil {
			return err
		}
		if !ok(ips) {
			return fmt.Errorf("%s answers %v", name, ips)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
