package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// seenCheck is a service's status check as Consul's health API shows it.
type seenCheck struct {
	tags           []string
	status, output string
}

func (s seenCheck) String() string {
	return fmt.Sprintf("tags=[%s] %s %q", strings.Join(s.tags, ","), s.status, s.output)
}

// statusCheck reads service id's status check (the TTL check, not the
// alias of the heartbeat) from Consul's health API, which the servers
// answer: what an operator and DNS see.
func statusCheck(ctx context.Context, client *api.Client, id string) (seenCheck, bool, error) {
	entries, _, err := client.Health().Service("redis", "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return seenCheck{}, false, err
	}
	for _, e := range entries {
		if e.Service.ID != id {
			continue
		}
		for _, c := range e.Checks {
			if c.ServiceID == id && c.Type == "ttl" {
				return seenCheck{tags: e.Service.Tags, status: c.Status, output: c.Output}, true, nil
			}
		}
	}
	return seenCheck{}, false, nil
}

// TestCheckStatusAndReasonTogether: after a kill -9 failover, Consul's
// health API shows each role change with its reason within a second or
// two — the new master passing with "master, confirmed by Sentinel...", the
// killed one critical with "redis unreachable...". Consul runs with its
// default check_update_interval (5m), under which the Consul agent holds
// back an update of a check's output alone: a reason written after its
// status would show empty for minutes.
func TestCheckStatusAndReasonTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	consul, err := c.StartConsul(sandbox.ConsulOptions{Extra: map[string]any{"check_update_interval": "5m"}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	id := func(r *sandbox.Redis) string { return "redis-" + r.IP() + "-" + strconv.Itoa(r.Port()) }
	agents := map[string]*sandbox.Agent{}
	for _, r := range shard.Nodes() {
		if agents[r.Addr()], err = c.StartAgent("", "agent-"+r.Name(), r.IP(), agentConfig(consul, shard, r, r.Name())); err != nil {
			t.Fatal(err)
		}
	}
	// Each change must show with its reason: from the first read that shows
	// the new status (and tags), the reason may lag by at most reasonLag.
	const reasonLag = 2 * time.Second
	waitWithReason := func(r *sandbox.Redis, status, reasonPrefix string, tagged func([]string) bool) {
		t.Helper()
		var first time.Time
		var seen seenCheck
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := sandbox.Poll(pctx, id(r)+" "+status+" with its reason", func(context.Context) error {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			s, ok, err := statusCheck(rctx, client, id(r))
			if err != nil || !ok {
				return fmt.Errorf("not in the health API (%v)", err)
			}
			seen = s
			if s.status != status || !tagged(s.tags) {
				return fmt.Errorf("health API shows %s", s)
			}
			if first.IsZero() {
				first = time.Now()
				t.Logf("%s: first read with the new status: %s", id(r), s)
			}
			if strings.HasPrefix(s.output, reasonPrefix) {
				return nil
			}
			if lag := time.Since(first); lag > reasonLag {
				return fmt.Errorf("after %s the health API still shows %s, not its reason", lag.Round(time.Millisecond), s)
			}
			return fmt.Errorf("health API shows %s", s)
		})
		if err != nil {
			t.Fatalf("%v (last seen: %s)", err, seen)
		}
		t.Logf("%s: %s, reason %s after the status", id(r), seen, time.Since(first).Round(time.Millisecond))
	}
	role := func(want string) func([]string) bool {
		return func(tags []string) bool { return len(tags) > 0 && tags[0] == want }
	}
	// Start-up: every instance shows its role with a reason.
	waitWithReason(shard.Master, api.HealthPassing, "master, confirmed by Sentinel", role("master"))
	for _, r := range shard.Replicas {
		waitWithReason(r, api.HealthPassing, "replica of "+shard.Master.Addr(), role("replica"))
	}

	old := shard.Master
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	newAddr, err := shard.WaitFailover(ctx, old.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover: %s -> %s", old.Addr(), newAddr)
	promoted := shard.Node(newAddr)

	waitWithReason(promoted, api.HealthPassing, "master, confirmed by Sentinel", role("master"))
	waitWithReason(old, api.HealthCritical, "redis unreachable", func(tags []string) bool {
		return len(tags) == 0 || tags[0] != "master"
	})

	// The new master's agent says in /v1/status that Consul holds its
	// registration.
	var snap status.Snapshot
	if err := sandbox.Poll(ctx, "the consul block of /v1/status", func(ctx context.Context) error {
		if err := opsGetJSON(ctx, agents[newAddr].URL("/v1/status"), &snap); err != nil {
			return err
		}
		if snap.Consul == nil || snap.Consul.Services != 1 || snap.Consul.Registered != 1 {
			return fmt.Errorf("consul block %+v", snap.Consul)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("/v1/status consul block of %s: %+v", newAddr, *snap.Consul)
}
