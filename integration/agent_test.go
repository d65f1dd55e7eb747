package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestValidateReportsEveryProblem runs the real binary on a file with three
// different mistakes: all three must be printed, and the exit code non-zero.
func TestValidateReportsEveryProblem(t *testing.T) {
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.yml")
	os.WriteFile(path, []byte(`
colour: blue                     # unknown key
timing: {tick: quickly}          # not a duration
sentinel: {addresses: [127.0.0.1:26379]}
redis:
  - address: 127.0.0.1:99999     # port out of range
    master_name: mymaster
`), 0o644)
	var out bytes.Buffer
	cmd := exec.Command(bin, "validate", "--config", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("validate: err %v, want exit code 2\n%s", err, out.String())
	}
	for _, want := range []string{`unknown key "colour"`, `"quickly" is not a duration`, `redis[0].address: "127.0.0.1:99999"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not mention %q:\n%s", want, out.String())
		}
	}
}

// agentConfig is the config of an agent on one Redis host, with timings
// shrunk so that the tests run in seconds.
func agentConfig(consul *sandbox.Consul, shard *sandbox.Shard, redis *sandbox.Redis, node string) map[string]any {
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	return map[string]any{
		"node_name": node,
		"consul":    map[string]any{"address": consul.HTTPAddr(), "ttl": "2s"},
		"sentinel":  map[string]any{"addresses": sentinels},
		"redis":     []any{map[string]any{"address": redis.Addr(), "master_name": shard.Name}},
		"timing":    map[string]any{"tick": "250ms", "consul_resync": "500ms"},
		"log":       map[string]any{"level": "debug"},
	}
}

// consulStack starts the test's cluster and a single Consul server, and
// returns them with a client of that server.
func consulStack(t *testing.T) (*sandbox.Cluster, *sandbox.Consul, *api.Client) {
	t.Helper()
	c := harness.ForTest(t, sandbox.Options{})
	consul, err := c.StartConsul(sandbox.ConsulOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c, consul, client
}

func healthOf(t *testing.T, client *api.Client, service, id string) string {
	t.Helper()
	entries, _, err := client.Health().Service(service, "", false, nil)
	if err != nil {
		t.Fatalf("health %s: %v", service, err)
	}
	for _, e := range entries {
		if e.Service.ID == id {
			return e.Checks.AggregatedStatus()
		}
	}
	return "absent"
}

// TestAgentStopAndKill: SIGTERM deregisters everything the agent
// registered; SIGKILL leaves the registration to its TTL, which goes
// critical so that DNS stops answering the node. SIGHUP adds and removes
// instances.
func TestAgentStopAndKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, consul, client := consulStack(t)
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	nodes := shard.Nodes()
	agents := make([]*sandbox.Agent, len(nodes))
	for i, r := range nodes {
		if agents[i], err = c.StartAgent("", "agent-"+r.Name(), r.IP(), agentConfig(consul, shard, r, r.Name())); err != nil {
			t.Fatal(err)
		}
	}
	id := func(r *sandbox.Redis) string { return "redis-" + r.IP() + "-" + strconv.Itoa(r.Port()) }
	extraID := "redis-extra-" + nodes[2].IP() + "-" + strconv.Itoa(nodes[2].Port())
	for _, r := range nodes {
		if err := sandbox.Poll(ctx, "passing "+id(r), func(context.Context) error {
			if s := healthOf(t, client, "redis", id(r)); s != api.HealthPassing {
				return errors.New(s)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// SIGHUP: the first agent also registers the second replica's Redis,
	// under another service name; then drops it again.
	extra := nodes[2]
	cfg := agentConfig(consul, shard, nodes[0], nodes[0].Name())
	cfg["redis"] = append(cfg["redis"].([]any), map[string]any{"address": extra.Addr(), "master_name": shard.Name, "service": "redis-extra"})
	if err := agents[0].WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	agents[0].Reload()
	if err := sandbox.Poll(ctx, "redis-extra registered after SIGHUP", func(context.Context) error {
		if s := healthOf(t, client, "redis-extra", extraID); s != api.HealthPassing {
			return errors.New(s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A broken file on SIGHUP changes nothing.
	os.WriteFile(agents[0].ConfigPath, []byte("redis: [\n"), 0o644)
	agents[0].Reload()
	if err := agents[0].WriteConfig(agentConfig(consul, shard, nodes[0], nodes[0].Name())); err != nil {
		t.Fatal(err)
	}
	agents[0].Reload()
	if err := sandbox.Poll(ctx, "redis-extra removed after SIGHUP", func(context.Context) error {
		if s := healthOf(t, client, "redis-extra", extraID); s != "absent" {
			return errors.New(s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if s := healthOf(t, client, "redis", id(nodes[0])); s != api.HealthPassing {
		t.Fatalf("the agent's own Redis is %s after the reloads", s)
	}

	// SIGTERM: gone at once.
	replica := nodes[1]
	if err := agents[1].Stop(); err != nil {
		t.Fatalf("agent did not stop cleanly on SIGTERM: %v", err)
	}
	if s := healthOf(t, client, "redis", id(replica)); s != "absent" {
		t.Fatalf("after SIGTERM %s is %s, want deregistered", id(replica), s)
	}

	// SIGKILL: the TTL (2s) expires, the check goes critical, DNS drops it.
	replica = nodes[2]
	if err := agents[2].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Poll(ctx, "killed agent's check critical", func(context.Context) error {
		if s := healthOf(t, client, "redis", id(replica)); s != api.HealthCritical {
			return errors.New(s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ips, err := consul.LookupA(ctx, "replica.redis.service.consul")
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range ips {
		if ip == replica.IP() {
			t.Fatalf("DNS still answers the killed agent's replica %s: %v", replica.IP(), ips)
		}
	}
}
