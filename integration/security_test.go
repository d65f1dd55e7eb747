package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The security claims of README's Security section, each proved against the real binaries:
// Redis and Sentinel AUTH (requirepass and ACL users) with the secrets in
// password files, a least-privilege Consul ACL token from a file or the
// environment against a Consul whose ACLs deny by default, and Consul over
// HTTPS. No secret may reach the agent's log, its HTTP surface or Consul.

// secRegisterRules is the least a token needs for an agent beside Redis
// nodes to register them and keep their roles in step (register,
// TTL updates, the "am I still registered?" listing and deregistration all
// go through the local agent API and need service:write on the name only).
const secRegisterRules = `service "redis" { policy = "write" }`

// secSentinelRules is the same for an agent that registers local Sentinels.
const secSentinelRules = `service "redis-sentinel" { policy = "write" }`

// secAgentRules is the recommended least-privilege policy of an agent beside
// Redis nodes: secRegisterRules, plus what the health API needs to list the
// other instances, which the dashboard (/, /v1/cluster) and Sentinel
// discovery through Consul (sentinel.consul_service) use. Without
// node:read Consul hides every instance (the node it runs on is not
// readable), without service:read it hides the service: no error, only an
// empty answer. An agent that also registers Sentinels or twemproxy needs
// write on redis-sentinel or twemproxy instead of read.
const secAgentRules = `
service "redis" { policy = "write" }
service "redis-consul-agent" { policy = "write" }
service "redis-sentinel" { policy = "read" }
service "twemproxy" { policy = "read" }
node_prefix "" { policy = "read" }
`

// secNewSecret returns a random secret that cannot occur anywhere by chance,
// so finding it in a log or a response is a leak.
func secNewSecret(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// secWriteFile writes value to dir/name with mode 0600, as an operator would
// keep a password or token, and returns the path.
func secWriteFile(t *testing.T, dir, name, value string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// secGet fetches url and returns the body; any status but 200 is an error.
func secGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// secLog returns the agent's log from byte offset from on.
func secLog(t *testing.T, a *sandbox.Agent, from int64) string {
	t.Helper()
	b, err := os.ReadFile(a.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if from > int64(len(b)) {
		from = 0
	}
	return string(b[from:])
}

// secLogSize is where the agent's log ends now, to read only what follows.
func secLogSize(t *testing.T, a *sandbox.Agent) int64 {
	t.Helper()
	fi, err := os.Stat(a.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// secAssertNoSecrets fails if any secret occurs in the agent's log, its
// command line or config file, or anything its HTTP server answers.
func secAssertNoSecrets(ctx context.Context, t *testing.T, a *sandbox.Agent, secrets ...string) {
	t.Helper()
	cfg, err := os.ReadFile(a.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{
		"log " + a.LogPath(): secLog(t, a, 0),
		"command line":       strings.Join(a.Argv(), " "),
		"config file":        string(cfg),
	}
	if !strings.Contains(places["log "+a.LogPath()], "agent started") {
		t.Fatalf("%s: the log has no 'agent started' line: is it the agent's log?", a.Name())
	}
	for _, path := range []string{"/v1/status", "/v1/cluster", "/metrics", "/"} {
		body, err := secGet(ctx, a.URL(path))
		if err != nil {
			t.Fatalf("%s: %v", a.Name(), err)
		}
		places["GET "+path] = body
	}
	for where, text := range places {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s: a secret (%.12s...) appears in its %s", a.Name(), s, where)
			}
		}
	}
}

// secAssertConsulClean fails if a secret occurs in what Consul holds about
// the services: definitions, meta, tags and check output.
func secAssertConsulClean(t *testing.T, admin *api.Client, services []string, secrets ...string) {
	t.Helper()
	for _, svc := range services {
		entries, _, err := admin.Health().Service(svc, "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			t.Fatalf("consul holds no %s instance to look at", svc)
		}
		b, err := json.Marshal(entries)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("consul holds a secret (%.12s...) in service %s", s, svc)
			}
		}
	}
}

// secMetric sums every series of the Prometheus counter or gauge name in
// the text exposition body.
func secMetric(body, name string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// secWaitDNS waits until Consul DNS answers name with exactly the IPs want.
func secWaitDNS(ctx context.Context, t *testing.T, consul *sandbox.Consul, name string, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	err := sandbox.Poll(ctx, fmt.Sprintf("DNS %s = %v", name, want), func(ctx context.Context) error {
		ips, err := consul.LookupA(ctx, name)
		if err != nil {
			return err
		}
		slices.Sort(ips)
		if !slices.Equal(ips, want) {
			return fmt.Errorf("answers %v", ips)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// secWaitHealth waits until the service id of service has the check status
// want ("absent" when it is not registered).
func secWaitHealth(ctx context.Context, t *testing.T, client *api.Client, service, id, want string) {
	t.Helper()
	err := sandbox.Poll(ctx, fmt.Sprintf("%s %s", id, want), func(context.Context) error {
		if s := healthOf(t, client, service, id); s != want {
			return errors.New(s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// secWaitLog waits until the agent's log, from offset from on, contains
// every one of want, and returns that part of the log.
func secWaitLog(ctx context.Context, t *testing.T, a *sandbox.Agent, from int64, want ...string) string {
	t.Helper()
	var text string
	err := sandbox.Poll(ctx, fmt.Sprintf("%s logs %q", a.Name(), want), func(context.Context) error {
		text = secLog(t, a, from)
		for _, w := range want {
			if !strings.Contains(text, w) {
				return fmt.Errorf("no %q yet", w)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// secRedisID and secSentinelID are the service IDs of internal/consulname.
func secRedisID(r *sandbox.Redis) string {
	return "redis-" + r.IP() + "-" + strconv.Itoa(r.Port())
}

func secSentinelID(s *sandbox.Sentinel) string {
	return "redis-sentinel-" + s.IP() + "-" + strconv.Itoa(s.Port())
}

// TestSecureRedisAndSentinel: Redis with requirepass, Sentinels with a
// password of their own, a Consul with ACLs; each agent gets every secret
// from a 0600 file only. The agents register the shard and the Sentinels,
// follow a failover, and no secret appears in their logs (at trace level),
// their HTTP surface or Consul.
func TestSecureRedisAndSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	redisPass, sentinelPass := secNewSecret("redis-pw"), secNewSecret("sentinel-pw")

	consul, err := c.StartConsul(sandbox.ConsulOptions{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	token, err := consul.CreateToken(ctx, secAgentRules)
	if err != nil {
		t.Fatal(err)
	}
	sentinelToken, err := consul.CreateToken(ctx, secSentinelRules)
	if err != nil {
		t.Fatal(err)
	}
	sentinels, err := c.StartSentinels(3, sandbox.SentinelOptions{Password: redisPass, RequirePass: sentinelPass})
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "secure", Replicas: 2, Use: sentinels, Password: redisPass})
	if err != nil {
		t.Fatal(err)
	}

	// Authentication is really on: without the passwords both refuse.
	for addr, who := range map[string]string{shard.Master.Addr(): "redis", sentinels[0].Addr(): "sentinel"} {
		_, err := sandbox.Do(ctx, addr, "PING")
		if err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Fatalf("%s %s answers PING without a password: %v", who, addr, err)
		}
	}

	secrets := t.TempDir()
	tokenFile := secWriteFile(t, secrets, "consul.token", token)
	sentinelTokenFile := secWriteFile(t, secrets, "consul-sentinels.token", sentinelToken)
	redisPassFile := secWriteFile(t, secrets, "redis.pass", redisPass)
	sentinelPassFile := secWriteFile(t, secrets, "sentinel.pass", sentinelPass)
	all := []string{redisPass, sentinelPass, token, sentinelToken, consul.Token()}

	var agents []*sandbox.Agent
	for _, r := range shard.Nodes() {
		cfg := agentConfig(consul, shard, r, r.Name())
		cfg["consul"].(map[string]any)["token_file"] = tokenFile
		cfg["sentinel"].(map[string]any)["password_file"] = sentinelPassFile
		cfg["redis"].([]any)[0].(map[string]any)["password_file"] = redisPassFile
		cfg["log"] = map[string]any{"level": "trace"}
		a, err := c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	// One agent registers the three Sentinels, with the password that
	// sentinels[] entries inherit from the sentinel section.
	var local []any
	for _, s := range sentinels {
		local = append(local, map[string]any{"address": s.Addr()})
	}
	sa, err := c.StartAgent("", "agent-sentinels", sentinels[0].IP(), map[string]any{
		"node_name": "sentinels",
		"consul":    map[string]any{"address": consul.HTTPAddr(), "ttl": "2s", "token_file": sentinelTokenFile},
		"sentinel":  map[string]any{"password_file": sentinelPassFile},
		"sentinels": local,
		"timing":    map[string]any{"tick": "250ms", "consul_resync": "500ms"},
		"log":       map[string]any{"level": "trace"},
	})
	if err != nil {
		t.Fatal(err)
	}
	agents = append(agents, sa)

	master := shard.Master
	for _, r := range shard.Nodes() {
		secWaitHealth(ctx, t, admin, "redis", secRedisID(r), api.HealthPassing)
	}
	var sentinelIPs []string
	for _, s := range sentinels {
		secWaitHealth(ctx, t, admin, "redis-sentinel", secSentinelID(s), api.HealthPassing)
		sentinelIPs = append(sentinelIPs, s.IP())
	}
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", master.IP())
	secWaitDNS(ctx, t, consul, "secure-master.redis.service.consul", master.IP())
	secWaitDNS(ctx, t, consul, "replica.redis.service.consul", shard.Replicas[0].IP(), shard.Replicas[1].IP())
	secWaitDNS(ctx, t, consul, "redis-sentinel.service.consul", sentinelIPs...)

	// kill -9 the master: the agents follow Sentinel's choice.
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	newAddr, err := shard.WaitFailover(ctx, master.Addr())
	if err != nil {
		t.Fatal(err)
	}
	promoted := shard.Node(newAddr)
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", promoted.IP())
	secWaitHealth(ctx, t, admin, "redis", secRedisID(master), api.HealthCritical)
	var left string
	for _, r := range shard.Replicas {
		if r != promoted {
			left = r.IP()
		}
	}
	secWaitDNS(ctx, t, consul, "replica.redis.service.consul", left)
	t.Logf("failover to %s followed in Consul DNS %s after the kill", newAddr, time.Since(start).Round(time.Millisecond))

	// The agents' status must show that they talk to Redis and Sentinel
	// (so the grep below looks at a working agent), and no secret.
	st, err := secGet(ctx, agents[1].URL("/v1/status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sentinels {
		if !strings.Contains(st, s.Addr()) {
			t.Fatalf("status of %s does not list Sentinel %s:\n%s", agents[1].Name(), s.Addr(), st)
		}
	}
	for _, a := range agents {
		secAssertNoSecrets(ctx, t, a, all...)
	}
	secAssertConsulClean(t, admin, []string{"redis", "redis-sentinel"}, all...)
}

// secSentinelsConfig is the config of an agent that registers the given
// Sentinels only.
func secSentinelsConfig(consul map[string]any, sentinels []*sandbox.Sentinel) map[string]any {
	var local []any
	for _, s := range sentinels {
		local = append(local, map[string]any{"address": s.Addr()})
	}
	return map[string]any{
		"node_name": "sentinels",
		"consul":    consul,
		"sentinels": local,
		"timing":    map[string]any{"tick": "250ms", "consul_resync": "500ms"},
		"log":       map[string]any{"level": "trace"},
	}
}

// TestConsulACLLeastPrivilege: Consul with ACLs on and default deny. Agents
// with a token holding service:write on their own service and nothing else
// register, keep their roles and answer DNS; the token comes from
// consul.token_file, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE. The
// recommended policy (secAgentRules) adds the reads the dashboard and
// Sentinel discovery through Consul need. An unknown token and a token
// without write get a log line that names the problem and the service, and
// no token is ever logged.
func TestConsulACLLeastPrivilege(t *testing.T) {
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
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "acl", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	master, replica := shard.Master, shard.Replicas[0]
	tokens := map[string]string{}
	for name, rules := range map[string]string{
		"register": secRegisterRules, "sentinels": secSentinelRules, "recommended": secAgentRules,
		"read-only": `service "redis" { policy = "read" }` + "\n" + `node_prefix "" { policy = "read" }`,
	} {
		if tokens[name], err = consul.CreateToken(ctx, rules); err != nil {
			t.Fatal(err)
		}
	}
	tokens["unknown"] = secNewSecret("00000000-0000-4000-8000") // a UUID-looking secret Consul never issued
	var all []string
	for _, tok := range tokens {
		all = append(all, tok)
	}
	all = append(all, consul.Token())
	dir := t.TempDir()

	// Three ways to hand over the token.
	sentinelsFile := secWriteFile(t, dir, "sentinels.token", tokens["sentinels"])
	sa, err := c.StartAgentEnv("", "agent-sentinels", shard.Sentinels[0].IP(),
		secSentinelsConfig(map[string]any{"address": consul.HTTPAddr(), "ttl": "2s"}, shard.Sentinels),
		[]string{"CONSUL_HTTP_TOKEN_FILE=" + sentinelsFile})
	if err != nil {
		t.Fatal(err)
	}
	masterTokenFile := secWriteFile(t, dir, "master.token", tokens["register"])
	mcfg := agentConfig(consul, shard, master, master.Name())
	mcfg["consul"].(map[string]any)["token_file"] = masterTokenFile
	mcfg["log"] = map[string]any{"level": "trace"}
	ma, err := c.StartAgent("", "agent-"+master.Name(), master.IP(), mcfg)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := agentConfig(consul, shard, replica, replica.Name())
	rcfg["log"] = map[string]any{"level": "trace"}
	ra, err := c.StartAgentEnv("", "agent-"+replica.Name(), replica.IP(), rcfg, []string{"CONSUL_HTTP_TOKEN=" + tokens["register"]})
	if err != nil {
		t.Fatal(err)
	}

	secWaitHealth(ctx, t, admin, "redis", secRedisID(master), api.HealthPassing)
	secWaitHealth(ctx, t, admin, "redis", secRedisID(replica), api.HealthPassing)
	// The register-only token may not register the agent's heartbeat: the
	// agent says so and each check keeps its own short TTL, no alias.
	secWaitLog(ctx, t, ma, 0, "consul refused the agent's heartbeat service")
	checks, _, err := admin.Health().Checks("redis", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range checks {
		if ch.ServiceID == secRedisID(master) && ch.Type != "ttl" {
			t.Errorf("with a register-only token %s has a %s check %s; want its TTL check only", ch.ServiceID, ch.Type, ch.CheckID)
		}
	}
	var sentinelIPs []string
	for _, s := range shard.Sentinels {
		secWaitHealth(ctx, t, admin, "redis-sentinel", secSentinelID(s), api.HealthPassing)
		sentinelIPs = append(sentinelIPs, s.IP())
	}
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", master.IP())
	secWaitDNS(ctx, t, consul, "acl-master.redis.service.consul", master.IP())
	secWaitDNS(ctx, t, consul, "replica.redis.service.consul", replica.IP())
	secWaitDNS(ctx, t, consul, "redis-sentinel.service.consul", sentinelIPs...)

	// What the write-only token does not give: the health API hides every
	// instance. The dashboard says its view is incomplete, and Sentinel
	// discovery through Consul says why it found nothing.
	body, err := secGet(ctx, ma.URL("/v1/cluster"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "the ACL token may not read every instance of redis") {
		t.Errorf("cluster view with a write-only token does not say that ACLs hide instances:\n%s", body)
	}
	// SIGTERM deregisters with that token too.
	if err := ma.Stop(); err != nil {
		t.Fatal(err)
	}
	if s := healthOf(t, admin, "redis", secRedisID(master)); s != "absent" {
		t.Fatalf("after SIGTERM %s is %s, want deregistered", secRedisID(master), s)
	}
	mcfg["sentinel"] = map[string]any{"consul_service": "redis-sentinel"}
	if err := ma.WriteConfig(mcfg); err != nil {
		t.Fatal(err)
	}
	from := secLogSize(t, ma)
	if err := ma.Restart(); err != nil {
		t.Fatal(err)
	}
	secWaitLog(ctx, t, ma, from, "sentinel discovery failed", `consul hid instances of \"redis-sentinel\" the ACL token may not read (it needs service:read on \"redis-sentinel\" and node:read)`)

	// The recommended token: Sentinels found through Consul only, and the
	// whole cluster on the dashboard.
	if err := ma.Stop(); err != nil {
		t.Fatal(err)
	}
	secWriteFile(t, dir, "master.token", tokens["recommended"])
	if err := ma.Restart(); err != nil {
		t.Fatal(err)
	}
	secWaitHealth(ctx, t, admin, "redis", secRedisID(master), api.HealthPassing)
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", master.IP())
	err = sandbox.Poll(ctx, "cluster view lists every node and Sentinel", func(ctx context.Context) error {
		st, err := secGet(ctx, ma.URL("/v1/status"))
		if err != nil {
			return err
		}
		cl, err := secGet(ctx, ma.URL("/v1/cluster"))
		if err != nil {
			return err
		}
		if strings.Contains(cl, `"error"`) {
			return fmt.Errorf("cluster view has an error: %s", cl)
		}
		for _, s := range shard.Sentinels {
			if !strings.Contains(st, s.Addr()) {
				return fmt.Errorf("status does not list Sentinel %s (discovered through Consul)", s.Addr())
			}
			if !strings.Contains(cl, s.Addr()) {
				return fmt.Errorf("cluster view does not list Sentinel %s", s.Addr())
			}
		}
		for _, r := range shard.Nodes() {
			if !strings.Contains(cl, r.Addr()) && !strings.Contains(cl, `"`+r.IP()+`"`) {
				return fmt.Errorf("cluster view does not list %s: %s", r.Addr(), cl)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Bad tokens: the agent says what is wrong and for which service.
	for _, bad := range []struct{ name, why string }{
		{"unknown", "ACL not found"},
		{"read-only", "lacks permission 'service:write'"},
	} {
		if err := ma.Stop(); err != nil {
			t.Fatal(err)
		}
		secWriteFile(t, dir, "master.token", tokens[bad.name])
		from = secLogSize(t, ma)
		if err := ma.Restart(); err != nil {
			t.Fatal(err)
		}
		text := secWaitLog(ctx, t, ma, from, "consul denied the request", secRedisID(master), bad.why)
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, "consul denied the request") {
				t.Logf("%s token: %s", bad.name, line)
				break
			}
		}
		if s := healthOf(t, admin, "redis", secRedisID(master)); s != "absent" {
			t.Fatalf("%s token: %s is %s in Consul", bad.name, secRedisID(master), s)
		}
		st, err := secGet(ctx, ma.URL("/v1/status"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(st, "consul denied the request") {
			t.Errorf("%s token: /v1/status does not show the denial:\n%s", bad.name, st)
		}
	}
	for _, a := range []*sandbox.Agent{ma, ra, sa} {
		secAssertNoSecrets(ctx, t, a, all...)
	}
	secAssertConsulClean(t, admin, []string{"redis", "redis-sentinel"}, all...)
}

// TestConsulOverHTTPS: Consul serves its API over HTTPS only. One agent is
// given https://IP:port and consul.ca_file; another IP:port with scheme https,
// tls_server_name and the CA through CONSUL_CACERT. Both register; an agent
// that does not trust the server's CA logs the x509 error, keeps running and
// retrying, and registers once it is given the right CA.
func TestConsulOverHTTPS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	consul, err := c.StartConsul(sandbox.ConsulOptions{HTTPS: true, ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	// The plain-HTTP API is off: nothing answers HTTP on the port.
	if _, err := secGet(ctx, "http://"+consul.HTTPAddr()+"/v1/status/leader"); err == nil {
		t.Fatal("consul answers plain HTTP on its HTTPS port")
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "tls", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	master, replica := shard.Master, shard.Replicas[0]
	token, err := consul.CreateToken(ctx, secRegisterRules)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := secWriteFile(t, t.TempDir(), "consul.token", token)

	mcfg := agentConfig(consul, shard, master, master.Name())
	mcfg["consul"] = map[string]any{"address": consul.HTTPURL(), "ca_file": consul.CA.CertFile, "token_file": tokenFile, "ttl": "2s"}
	ma, err := c.StartAgent("", "agent-"+master.Name(), master.IP(), mcfg)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := agentConfig(consul, shard, replica, replica.Name())
	rcfg["consul"] = map[string]any{"address": consul.HTTPAddr(), "scheme": "https", "tls_server_name": "server.dc1.consul", "token_file": tokenFile, "ttl": "2s"}
	ra, err := c.StartAgentEnv("", "agent-"+replica.Name(), replica.IP(), rcfg, []string{"CONSUL_CACERT=" + consul.CA.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	secWaitHealth(ctx, t, admin, "redis", secRedisID(master), api.HealthPassing)
	secWaitHealth(ctx, t, admin, "redis", secRedisID(replica), api.HealthPassing)
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", master.IP())
	secWaitDNS(ctx, t, consul, "replica.redis.service.consul", replica.IP())

	// A CA that did not sign the server's certificate.
	other, err := sandbox.NewCA(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := ma.Stop(); err != nil {
		t.Fatal(err)
	}
	mcfg["consul"].(map[string]any)["ca_file"] = other.CertFile
	if err := ma.WriteConfig(mcfg); err != nil {
		t.Fatal(err)
	}
	from := secLogSize(t, ma)
	if err := ma.Restart(); err != nil {
		t.Fatal(err)
	}
	exited := ma.Exited()
	text := secWaitLog(ctx, t, ma, from, "x509", secRedisID(master))
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "x509") {
			t.Logf("wrong CA: %s", line)
			break
		}
	}
	// It keeps running and retrying (with backoff): the failure counter
	// goes on growing, and the process does not exit.
	err = sandbox.Poll(ctx, "three failed registrations", func(ctx context.Context) error {
		m, err := secGet(ctx, ma.URL("/metrics"))
		if err != nil {
			return err
		}
		if n := secMetric(m, "redis_consul_agent_consul_write_failures_total"); n < 3 {
			return fmt.Errorf("%v failures", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatalf("the agent exited on a TLS error: %v", ma.ExitErr())
	default:
	}
	if s := healthOf(t, admin, "redis", secRedisID(master)); s != "absent" {
		t.Fatalf("wrong CA: %s is %s in Consul", secRedisID(master), s)
	}
	st, err := secGet(ctx, ma.URL("/v1/status"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st, "x509") {
		t.Errorf("wrong CA: /v1/status does not show the TLS error:\n%s", st)
	}

	// The right CA again: registered.
	if err := ma.Stop(); err != nil {
		t.Fatal(err)
	}
	mcfg["consul"].(map[string]any)["ca_file"] = consul.CA.CertFile
	if err := ma.WriteConfig(mcfg); err != nil {
		t.Fatal(err)
	}
	if err := ma.Restart(); err != nil {
		t.Fatal(err)
	}
	secWaitHealth(ctx, t, admin, "redis", secRedisID(master), api.HealthPassing)
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", master.IP())
	for _, a := range []*sandbox.Agent{ma, ra} {
		secAssertNoSecrets(ctx, t, a, token, consul.Token())
	}
}

// secRedisACL is the least an agent's Redis ACL user needs: ROLE and INFO
// (replication, persistence, server). go-redis authenticates with HELLO
// ... AUTH, which Redis runs before the user is known, so it needs no right.
const secRedisACL = "-@all +role +info"

// secSentinelACL is the least an agent's Sentinel ACL user needs: PING,
// SENTINEL MASTERS / MASTER / MYID / GET-MASTER-ADDR-BY-NAME and SUBSCRIBE to every
// channel the agent listens to (discovery.Channels; one SUBSCRIBE for all,
// so a single missing channel fails them all).
func secSentinelACL() string {
	rules := []string{"resetchannels", "-@all", "+ping", "+subscribe",
		"+sentinel|masters", "+sentinel|master", "+sentinel|myid", "+sentinel|get-master-addr-by-name"}
	for _, ch := range discovery.Channels {
		rules = append(rules, "&"+ch)
	}
	return strings.Join(rules, " ")
}

// secACLDenials returns the ACL LOG entries of user on the server at addr
// (Redis or Sentinel), read as the default user with password.
func secACLDenials(ctx context.Context, addr, password, user string) ([]string, error) {
	cl := sandbox.NewClient(addr, password)
	defer cl.Close()
	v, err := cl.Do(ctx, "ACL", "LOG").Slice()
	if err != nil {
		return nil, fmt.Errorf("ACL LOG on %s: %w", addr, err)
	}
	var out []string
	for _, e := range v {
		fields := map[string]string{}
		if kv, ok := e.([]any); ok {
			for i := 0; i+1 < len(kv); i += 2 {
				fields[fmt.Sprint(kv[i])] = fmt.Sprint(kv[i+1])
			}
		}
		if fields["username"] == user {
			out = append(out, fmt.Sprintf("%s %s (%s)", fields["reason"], fields["object"], fields["context"]))
		}
	}
	return out, nil
}

// TestSecureRedisACLUsers: the agents reach Redis and Sentinel as ACL users
// (username + password_file) allowed nothing but the commands they use
// (secRedisACL, secSentinelACL), while replication and Sentinel keep the
// default user. Registration, a failover and the Sentinel registrations
// work, and neither Redis nor Sentinel logs a single denial for the agents.
func TestSecureRedisACLUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	const user = "rca-agent"
	redisPass, sentinelPass := secNewSecret("redis-pw"), secNewSecret("sentinel-pw")
	agentRedisPass, agentSentinelPass := secNewSecret("agent-redis-pw"), secNewSecret("agent-sentinel-pw")

	consul, err := c.StartConsul(sandbox.ConsulOptions{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	token, err := consul.CreateToken(ctx, secAgentRules+secSentinelRules)
	if err != nil {
		t.Fatal(err)
	}
	sentinels, err := c.StartSentinels(3, sandbox.SentinelOptions{
		Password: redisPass, RequirePass: sentinelPass,
		Extra: []string{"user " + user + " on >" + agentSentinelPass + " " + secSentinelACL()},
	})
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{
		Name: "acluser", Replicas: 2, Use: sentinels, Password: redisPass,
		RedisExtra: []string{"user " + user + " on >" + agentRedisPass + " " + secRedisACL},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile := secWriteFile(t, dir, "consul.token", token)
	redisPassFile := secWriteFile(t, dir, "redis.pass", agentRedisPass)
	sentinelPassFile := secWriteFile(t, dir, "sentinel.pass", agentSentinelPass)
	all := []string{redisPass, sentinelPass, agentRedisPass, agentSentinelPass, token, consul.Token()}
	sentinelSection := map[string]any{"addresses": nil, "username": user, "password_file": sentinelPassFile}

	var agents []*sandbox.Agent
	for _, r := range shard.Nodes() {
		cfg := agentConfig(consul, shard, r, r.Name())
		cfg["consul"].(map[string]any)["token_file"] = tokenFile
		sentinelSection["addresses"] = cfg["sentinel"].(map[string]any)["addresses"]
		cfg["sentinel"] = sentinelSection
		redis := cfg["redis"].([]any)[0].(map[string]any)
		redis["username"], redis["password_file"] = user, redisPassFile
		cfg["log"] = map[string]any{"level": "trace"}
		a, err := c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a)
	}
	scfg := secSentinelsConfig(map[string]any{"address": consul.HTTPAddr(), "ttl": "2s", "token_file": tokenFile}, sentinels)
	scfg["sentinel"] = map[string]any{"username": user, "password_file": sentinelPassFile}
	sa, err := c.StartAgent("", "agent-sentinels", sentinels[0].IP(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	agents = append(agents, sa)

	master := shard.Master
	for _, r := range shard.Nodes() {
		secWaitHealth(ctx, t, admin, "redis", secRedisID(r), api.HealthPassing)
	}
	for _, s := range sentinels {
		secWaitHealth(ctx, t, admin, "redis-sentinel", secSentinelID(s), api.HealthPassing)
	}
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", master.IP())
	secWaitDNS(ctx, t, consul, "replica.redis.service.consul", shard.Replicas[0].IP(), shard.Replicas[1].IP())

	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	newAddr, err := shard.WaitFailover(ctx, master.Addr())
	if err != nil {
		t.Fatal(err)
	}
	promoted := shard.Node(newAddr)
	secWaitDNS(ctx, t, consul, "master.redis.service.consul", promoted.IP())
	for _, r := range shard.Replicas {
		secWaitHealth(ctx, t, admin, "redis", secRedisID(r), api.HealthPassing)
	}

	// The agents are connected as their user, not as the default one.
	for _, addr := range []struct{ addr, pass string }{{promoted.Addr(), redisPass}, {sentinels[0].Addr(), sentinelPass}} {
		cl := sandbox.NewClient(addr.addr, addr.pass)
		list, err := cl.Do(ctx, "CLIENT", "LIST").Text()
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(list, " user="+user+" ") {
			t.Fatalf("no client of %s is user %s:\n%s", addr.addr, user, list)
		}
	}
	// Not one command or channel was refused to the agents' users.
	for _, r := range shard.Replicas {
		denied, err := secACLDenials(ctx, r.Addr(), redisPass, user)
		if err != nil {
			t.Fatal(err)
		}
		if len(denied) > 0 {
			t.Errorf("redis %s refused the agent: %v", r.Name(), denied)
		}
	}
	for _, s := range sentinels {
		denied, err := secACLDenials(ctx, s.Addr(), sentinelPass, user)
		if err != nil {
			t.Fatal(err)
		}
		if len(denied) > 0 {
			t.Errorf("sentinel %s refused the agent: %v", s.Name(), denied)
		}
	}
	// The check above works: a command outside the rules is logged.
	probe := redis.NewClient(&redis.Options{Addr: promoted.Addr(), Username: user, Password: agentRedisPass, Protocol: 2, DisableIdentity: true})
	defer probe.Close()
	if err := probe.Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("GET as %s: %v, want NOPERM", user, err)
	}
	if denied, err := secACLDenials(ctx, promoted.Addr(), redisPass, user); err != nil || len(denied) != 1 {
		t.Fatalf("ACL LOG after a refused GET: %v, %v; want one entry", denied, err)
	}
	for _, a := range agents {
		secAssertNoSecrets(ctx, t, a, all...)
	}
	secAssertConsulClean(t, admin, []string{"redis", "redis-sentinel"}, all...)
}
