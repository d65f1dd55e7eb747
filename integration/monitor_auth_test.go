package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestMonitorAuthConfirmsSwitch: an agent beside twemproxy only (no redis
// entry to borrow credentials from), in front of Redis with requirepass,
// confirms a +switch-master with the credentials of sentinel.redis_auth and
// applies it from the event.
//
// Two of the three Sentinels are frozen (SIGSTOP) before a SENTINEL
// FAILOVER on the third, so no poll can find a Sentinel majority: the
// agent's truth goes stale, and only the leader's +switch-master, once the
// named node answers ROLE master, can move it. The truth must then name the
// promoted replica with source switch-master and twemproxy must follow.
// Without the Monitor's own credentials the ROLE is refused (NOAUTH) and the
// truth stays stale on the old master.
func TestMonitorAuthConfirmsSwitch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	const pass = "monitor-auth-s3cret"
	consul, err := c.StartConsul(sandbox.ConsulOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "authshard", Replicas: 1, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.Do(ctx, shard.Master.Addr(), "ROLE"); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("Redis %s answers ROLE without a password: %v", shard.Master.Addr(), err)
	}

	ip := c.NewIP()
	listen, err := c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := c.ProcessDir("nutcracker-auth")
	if err != nil {
		t.Fatal(err)
	}
	nutConf := filepath.Join(dir, "nutcracker.yml")
	pool := fmt.Sprintf("auth:\n  listen: %s:%d\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  redis_auth: %s\n  auto_eject_hosts: false\n  timeout: 400\n  servers:\n    - %s:1 %s\n",
		ip, listen, pass, shard.Master.Addr(), shard.Name)
	if err := os.WriteFile(nutConf, []byte(pool), 0o600); err != nil {
		t.Fatal(err)
	}
	passFile := filepath.Join(t.TempDir(), "redis.pass")
	if err := os.WriteFile(passFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nut, err := sandbox.Binary("nutcracker")
	if err != nil {
		t.Fatal(err)
	}
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	agent, err := c.StartAgent("", "agent-twemproxy", ip, map[string]any{
		"node_name": "proxy-host",
		"consul":    map[string]any{"address": consul.HTTPAddr(), "ttl": "2s"},
		"sentinel": map[string]any{
			"addresses":  sentinels,
			"redis_auth": map[string]any{"password_file": passFile},
		},
		"twemproxy": []any{map[string]any{
			"name": "main", "config_file": nutConf, "nutcracker": nut,
			"restart": map[string]any{"mode": "supervise", "command": []string{nut, "-c", nutConf, "-s", fmt.Sprint(stats), "-a", ip}},
		}},
		"timing": map[string]any{"consul_resync": "500ms"},
		// The ROLE confirmation of a +switch-master is what this test is
		// about; the promotion truth (the default) asks ROLE with the same
		// credentials but would name the master before the event.
		"failover": map[string]any{"act_on": "announcement"},
		"log":      map[string]any{"level": "debug"},
	})
	if err != nil {
		t.Fatal(err)
	}
	old := shard.Master.Addr()
	maWaitTruth(ctx, t, agent, shard.Name, "the majority naming "+old, func(m status.Master) bool {
		return m.Addr == old && m.Source == discovery.SourceMajority
	})

	// Freeze two Sentinels: from now on no poll sees a majority.
	for _, s := range shard.Sentinels[1:] {
		if err := s.Pause(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Resume() })
	}
	maWaitTruth(ctx, t, agent, shard.Name, "the truth to go stale with two Sentinels frozen", func(m status.Master) bool {
		return m.Source == discovery.SourceStale
	})

	// A forced failover needs no other Sentinel's vote.
	leader := shard.Sentinels[0].Client()
	defer leader.Close()
	if err := leader.Failover(ctx, shard.Name).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER %s: %v", shard.Name, err)
	}
	promoted := shard.Replicas[0].Addr()
	got := maWaitTruth(ctx, t, agent, shard.Name, "the +switch-master to "+promoted+" to be applied", func(m status.Master) bool {
		return m.Addr == promoted
	})
	if got.Source != discovery.SourceSwitchMaster {
		t.Fatalf("truth %s came from %q, want %q: only the event could name it", got.Addr, got.Source, discovery.SourceSwitchMaster)
	}
	if err := sandbox.Poll(ctx, "twemproxy config to name "+promoted, func(context.Context) error {
		b, err := os.ReadFile(nutConf)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), promoted+":1") || strings.Contains(string(b), old+":1") {
			return fmt.Errorf("config:\n%s", b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("truth %s (source %s, %d/%d sentinels agree) with two of three Sentinels frozen; twemproxy rewritten", got.Addr, got.Source, got.Agree, got.Total)
}

// maWaitTruth waits (up to 30s: the agent polls every second, so any change
// shows within a few) until the agent's /v1/status truth for name satisfies
// ok and returns it; on timeout it reports the last truth and the agent's
// journal (where an unconfirmed switch says why).
func maWaitTruth(ctx context.Context, t *testing.T, a *sandbox.Agent, name, what string, ok func(status.Master) bool) status.Master {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got status.Master
	var last status.Snapshot
	err := sandbox.Poll(ctx, what, func(ctx context.Context) error {
		snap, err := maStatus(ctx, a)
		if err != nil {
			return err
		}
		last = snap
		for _, m := range snap.Masters {
			if m.Name == name {
				got = m
				if ok(m) {
					return nil
				}
				return fmt.Errorf("truth %+v", m)
			}
		}
		return fmt.Errorf("no truth for %s in %+v", name, snap.Masters)
	})
	if err != nil {
		var journal []string
		for _, e := range last.Events {
			journal = append(journal, fmt.Sprintf("%s %s %s: %s", e.Kind, e.Type, e.Subject, e.Detail))
		}
		t.Fatalf("%v\nagent journal:\n%s", err, strings.Join(journal, "\n"))
	}
	return got
}

func maStatus(ctx context.Context, a *sandbox.Agent) (status.Snapshot, error) {
	var s status.Snapshot
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL("/v1/status"), nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return s, err
	}
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /v1/status: %s: %s", resp.Status, b)
	}
	return s, json.Unmarshal(b, &s)
}
