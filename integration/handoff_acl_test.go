package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestHandoffWithACLHiddenOldMaster: Consul with ACLs on (default deny); each
// agent's token may register its service but not read the node it runs on,
// so the health API hides every registration from it and says so
// (X-Consul-Results-Filtered-By-ACLs). The old master's agent is frozen
// (SIGSTOP), so its master registration stays passing in DNS; a planned
// failover (SENTINEL FAILOVER) promotes the replica. The promoted node's
// handoff must count the filtered answer as "the old master may still be
// there", not as "no old master": it does not take the master tag while
// the old one is answered, and takes it the moment the old master's agent,
// resumed, withdraws it. DNS never answers two masters throughout.
func TestHandoffWithACLHiddenOldMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	consul, err := c.StartConsul(sandbox.ConsulOptions{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "hacl", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	old, promoted := shard.Master, shard.Replicas[0]
	// service:write on redis and nothing else: no node:read, so Consul
	// hides every instance of redis from the health API.
	token, err := consul.CreateToken(ctx, secRegisterRules)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := secWriteFile(t, t.TempDir(), "agent.token", token)
	const handoff = 4 * time.Second
	agents := map[*sandbox.Redis]*sandbox.Agent{}
	for _, r := range shard.Nodes() {
		cfg := agentConfig(consul, shard, r, r.Name())
		// A TTL long enough that the frozen agent's registration stays
		// passing for the whole test.
		cfg["consul"] = map[string]any{"address": consul.HTTPAddr(), "ttl": "60s", "token_file": tokenFile}
		cfg["timing"].(map[string]any)["master_handoff"] = handoff.String()
		if agents[r], err = c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	secWaitHealth(ctx, t, admin, "redis", secRedisID(old), api.HealthPassing)
	secWaitHealth(ctx, t, admin, "redis", secRedisID(promoted), api.HealthPassing)
	secWaitDNS(ctx, t, consul, "hacl-master.redis.service.consul", old.IP())
	secWaitDNS(ctx, t, consul, "replica.redis.service.consul", promoted.IP())

	// The old master's agent cannot withdraw anything while it is stopped.
	if err := agents[old].Pause(); err != nil {
		t.Fatal(err)
	}
	from := secLogSize(t, agents[promoted])
	w := startupWatch(ctx, consul, "", "master.redis.service.consul", "hacl-master.redis.service.consul")
	sc := shard.Sentinels[0].Client()
	err = sc.Failover(ctx, shard.Name).Err()
	sc.Close()
	if err != nil {
		w.stop()
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	err = promoted.WaitRole(pctx, "master")
	pcancel()
	if err != nil {
		w.stop()
		t.Fatal(err)
	}
	promotedAt := time.Now()
	// Well within the handoff bound, the promoted node must not have taken
	// the tag: DNS still answers the old master alone.
	hold := handoff / 3
	var broken error
	err = sandbox.Poll(ctx, "the handoff holding the tag back", func(ctx context.Context) error {
		ips, err := consul.LookupA(ctx, "hacl-master.redis.service.consul")
		if err != nil {
			return err
		}
		if !slices.Equal(ips, []string{old.IP()}) {
			broken = fmt.Errorf("hacl-master answers %v %s after the promotion, want the old master %s alone (its agent is frozen)",
				ips, time.Since(promotedAt).Round(time.Millisecond), old.IP())
			return nil
		}
		if time.Since(promotedAt) < hold {
			return errors.New("holding")
		}
		return nil
	})
	if err == nil {
		err = broken
	}
	if err != nil {
		samples, wrong := w.stop()
		t.Fatalf("%v (DNS: %d samples, two masters in %d: %v)", err, samples, len(wrong), wrong)
	}
	secWaitLog(ctx, t, agents[promoted], from, "consul hides registrations with the master tag from the agent's ACL token")

	// The old master's agent resumes and withdraws; the promoted node takes
	// the tag as soon as Consul's answer no longer hides a master.
	resumed := time.Now()
	if err := agents[old].Resume(); err != nil {
		t.Fatal(err)
	}
	secWaitDNS(ctx, t, consul, "hacl-master.redis.service.consul", promoted.IP())
	took := time.Since(resumed)
	samples, wrong := w.stop()
	if len(wrong) > 0 {
		t.Fatalf("DNS answered two masters in %d of %d samples: %v", len(wrong), samples, wrong)
	}
	if left := handoff - resumed.Sub(promotedAt); took > left-200*time.Millisecond {
		t.Errorf("the promoted node took the tag %s after the old master's agent resumed: it waited out the handoff instead of seeing the old master leave", took)
	}
	t.Logf("promoted %s; old master's agent resumed %s after the promotion; DNS answered the new master alone %s later; %d DNS samples, never two masters",
		promoted.Addr(), resumed.Sub(promotedAt).Round(time.Millisecond), took.Round(time.Millisecond), samples)
}
