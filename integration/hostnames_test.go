package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestSentinelHostnames: Sentinels with resolve-hostnames and
// announce-hostnames on, nodes that announce hostnames (replica-announce-ip),
// so that Sentinel reports every node as "<name>.<domain>:port", while each
// agent is given its Redis by IP (redis.address). The names are real: lines
// in /etc/hosts under a domain unique to this run, removed when the test
// ends. The agents must recognise their node in Sentinel's answer: the
// master registered and tagged, the replica passing, and after a kill -9
// failover the promoted node tagged master and the old one not.
func TestSentinelHostnames(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var b [4]byte
	_, _ = rand.Read(b[:])
	hosts, err := sandbox.NewHosts("/etc/hosts", "rca-"+hex.EncodeToString(b[:])+".test")
	if err != nil {
		t.Fatal(err)
	}
	// Registered before ForTest's cleanup, so it runs after every process
	// is gone.
	t.Cleanup(func() {
		if err := hosts.Close(); err != nil {
			t.Error(err)
		}
	})
	c, consul, admin := consulStack(t)
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "hname", Replicas: 1, Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	master, replica := shard.Master, shard.Replicas[0]
	said, err := shard.Sentinels[0].MasterAddr(ctx, shard.Name)
	if err != nil {
		t.Fatal(err)
	}
	if said != master.Announced() || said == master.Addr() {
		t.Fatalf("Sentinel reports the master as %s, want its hostname %s (not %s): the test would not test hostnames", said, master.Announced(), master.Addr())
	}
	if ips, err := net.DefaultResolver.LookupHost(ctx, master.Hostname); err != nil || !slices.Equal(ips, []string{master.IP()}) {
		t.Fatalf("%s resolves to %v (%v), want %s", master.Hostname, ips, err, master.IP())
	}
	t.Logf("Sentinel names the master %s; the agents are given %s and %s", said, master.Addr(), replica.Addr())
	agents := map[*sandbox.Redis]*sandbox.Agent{}
	for _, r := range shard.Nodes() {
		if agents[r], err = c.StartAgent("", "agent-"+r.Name(), r.IP(), agentConfig(consul, shard, r, r.Name())); err != nil {
			t.Fatal(err)
		}
	}
	roles := func(what string, want map[*sandbox.Redis][]string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var last error // the last answer, not the deadline that ended the wait
		err := sandbox.Poll(wctx, what, func(ctx context.Context) error {
			err := hostnamesRolesAre(ctx, admin, want)
			if err != nil && ctx.Err() == nil {
				last = err
			}
			return err
		})
		if err != nil {
			t.Fatalf("%v; last answer: %v", err, last)
		}
	}
	roles("the master and the replica recognised by hostname", map[*sandbox.Redis][]string{
		master: {"master", "hname-master"}, replica: {"replica", "hname-replica"},
	})
	secWaitDNS(ctx, t, consul, "hname-master.redis.service.consul", master.IP())

	// kill -9: Sentinel promotes the replica and names it by hostname.
	killed := time.Now()
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	newAddr, err := shard.WaitFailover(fctx, master.Announced())
	fcancel()
	if err != nil {
		t.Fatal(err)
	}
	if newAddr != replica.Announced() {
		t.Fatalf("Sentinel names %s after the failover, want %s", newAddr, replica.Announced())
	}
	roles("the promoted node recognised by hostname", map[*sandbox.Redis][]string{replica: {"master", "hname-master"}})
	secWaitDNS(ctx, t, consul, "hname-master.redis.service.consul", replica.IP())
	t.Logf("failover to %s: DNS answered its IP %s after the kill", newAddr, time.Since(killed).Round(time.Millisecond))
	// The old master comes back as a master: Sentinel names the other node
	// by hostname, the agent must see that it is not this one, and follow
	// Sentinel's conversion of it into a replica. (With down-after 1s a
	// Sentinel sometimes fails over again on its own, even to the returning
	// node: the agents must then follow that, so the end state is whatever
	// the Sentinels name when it settles.)
	w := startupWatch(ctx, consul, "", "master.redis.service.consul", "hname-master.redis.service.consul")
	if err := master.Restart(); err != nil {
		w.stop()
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 45*time.Second)
	var last error
	err = sandbox.Poll(wctx, "Consul following the Sentinels' hostnames after the old master returned", func(ctx context.Context) error {
		addr, err := shard.CurrentMaster(ctx)
		if err != nil {
			return err
		}
		cur := shard.Node(addr)
		if cur == nil {
			return fmt.Errorf("the Sentinels name %s", addr)
		}
		want := map[*sandbox.Redis][]string{}
		for _, r := range shard.Nodes() {
			want[r] = []string{"replica", "hname-replica"}
		}
		want[cur] = []string{"master", "hname-master"}
		if err = hostnamesRolesAre(ctx, admin, want); err != nil && ctx.Err() == nil {
			last = fmt.Errorf("Sentinel names %s: %w", addr, err)
		}
		return err
	})
	wcancel()
	samples, wrong := w.stop()
	if err != nil {
		t.Fatalf("%v; last answer: %v", err, last)
	}
	if len(wrong) > 0 {
		t.Fatalf("DNS answered two masters in %d of %d samples: %v", len(wrong), samples, wrong)
	}
	t.Logf("after the old master returned: %d DNS samples, never two masters; Consul agrees with Sentinel", samples)
}

// hostnamesRolesAre checks that each node in want is registered, passing,
// with the tags given.
func hostnamesRolesAre(ctx context.Context, admin *api.Client, want map[*sandbox.Redis][]string) error {
	for r, tags := range want {
		entries, _, err := admin.Health().Service("redis", "", false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		i := slices.IndexFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == secRedisID(r) })
		if i < 0 {
			return fmt.Errorf("%s not registered", secRedisID(r))
		}
		e := entries[i]
		if !slices.Equal(e.Service.Tags, tags) || e.Checks.AggregatedStatus() != api.HealthPassing {
			out := ""
			if len(e.Checks) > 0 {
				out = e.Checks[0].Output
			}
			return fmt.Errorf("%s is %v %s (%s), want %v passing", e.Service.ID, e.Service.Tags, e.Checks.AggregatedStatus(), out, tags)
		}
	}
	return nil
}
