package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestTopology builds the product's topology (README) for real and checks the harness gives
// every process its own host: Sentinel must see replicas and peers at their
// own addresses, twemproxy must proxy to the shard, and a killed master must
// be replaced by Sentinel.
func TestTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and nutcracker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c := harness.ForTest(t, sandbox.Options{})

	consul, err := c.StartConsul(sandbox.ConsulOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	if leader, err := cl.Status().Leader(); err != nil || leader == "" {
		t.Fatalf("consul leader = %q, %v", leader, err)
	}
	ips, err := consul.LookupA(ctx, consul.NodeName()+".node.consul")
	if err != nil || !slices.Equal(ips, []string{consul.IP()}) {
		t.Fatalf("DNS %s.node.consul = %v, %v; want [%s]", consul.NodeName(), ips, err, consul.IP())
	}
	srvs, err := consul.LookupSRV(ctx, "consul.service.consul")
	if err != nil || len(srvs) != 1 || int(srvs[0].Port) != consul.ServerPort {
		t.Fatalf("DNS SRV consul.service.consul = %v, %v; want port %d", srvs, err, consul.ServerPort)
	}

	shard, err := c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2, Sentinels: 3, Quorum: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("consul and shard ready after %s", time.Since(start).Round(time.Millisecond))

	// Every process on its own host.
	hosts := map[string]string{consul.IP(): consul.Name()}
	var replicas, all []*sandbox.Process
	for _, r := range shard.Replicas {
		replicas = append(replicas, r.Process)
	}
	all = append(all, shard.Master.Process)
	all = append(all, replicas...)
	for _, sn := range shard.Sentinels {
		all = append(all, sn.Process)
	}
	for _, p := range all {
		if other, dup := hosts[p.IP()]; dup || p.IP() == "127.0.0.1" {
			t.Fatalf("%s got IP %s (also %q)", p.Name(), p.IP(), other)
		}
		hosts[p.IP()] = p.Name()
	}

	// Sentinel sees replicas and peers at their own announced addresses.
	wantReplicas := addrs(replicas)
	for _, sn := range shard.Sentinels {
		reps, err := sn.Replicas(ctx, "mymaster")
		if err != nil {
			t.Fatal(err)
		}
		if got := sortedAddrs(reps); !slices.Equal(got, wantReplicas) {
			t.Errorf("%s: SENTINEL REPLICAS = %v, want %v", sn.Name(), got, wantReplicas)
		}
		peers, err := sn.Peers(ctx, "mymaster")
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, o := range shard.Sentinels {
			if o != sn {
				want = append(want, o.Addr())
			}
		}
		slices.Sort(want)
		if got := sortedAddrs(peers); !slices.Equal(got, want) {
			t.Errorf("%s: SENTINEL SENTINELS = %v, want %v", sn.Name(), got, want)
		}
	}

	// twemproxy in front of the shard, the server named by the master name.
	ip := c.NewIP()
	port, err := c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := c.StartNutcracker(sandbox.NutcrackerOptions{ConfigYAML: fmt.Sprintf(`alpha:
  listen: %s
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  timeout: 400
  servers:
   - %s:1 mymaster
`, net.JoinHostPort(ip, fmt.Sprint(port)), shard.Master.Addr())})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := sandbox.Do(ctx, nc.Addr(), "SET", "greeting", "hello"); err != nil || v != "OK" {
		t.Fatalf("SET through nutcracker = %v, %v", v, err)
	}
	if v, err := sandbox.Do(ctx, nc.Addr(), "GET", "greeting"); err != nil || v != "hello" {
		t.Fatalf("GET through nutcracker = %v, %v", v, err)
	}
	if v, err := sandbox.Do(ctx, shard.Master.Addr(), "GET", "greeting"); err != nil || v != "hello" {
		t.Fatalf("GET on the master = %v, %v", v, err)
	}

	// kill -9 the master: Sentinel promotes a replica.
	old := shard.Master.Addr()
	if err := shard.Master.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	newMaster, err := shard.WaitFailover(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(wantReplicas, newMaster) {
		t.Fatalf("new master %s is not one of the replicas %v", newMaster, wantReplicas)
	}
	t.Logf("failover %s -> %s took %s", old, newMaster, time.Since(killed).Round(time.Millisecond))

	// The old master restarts as a master on the same port; Sentinel demotes it.
	if err := shard.Master.Restart(); err != nil {
		t.Fatal(err)
	}
	if shard.Master.Addr() != old {
		t.Fatalf("restarted master moved from %s to %s", old, shard.Master.Addr())
	}
	if err := shard.Master.WaitRole(ctx, "slave"); err != nil {
		t.Fatal(err)
	}
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

// TestClustersDoNotClash starts clusters that overlap and follow each other in
// one test binary: no address is reused, and a closed cluster leaves nothing
// listening.
func TestClustersDoNotClash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul and Redis")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seen := map[string]string{}
	startOne := func(label string) *sandbox.Cluster {
		c, err := sandbox.New(sandbox.Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		consul, err := c.StartConsul(sandbox.ConsulOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.StartRedis(sandbox.RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sandbox.Do(ctx, r.Addr(), "SET", "cluster", label); err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{consul.HTTPAddr(), consul.DNSAddr(), r.Addr()} {
			if prev, dup := seen[a]; dup {
				t.Fatalf("cluster %s reuses %s of cluster %s", label, a, prev)
			}
			seen[a] = label
		}
		return c
	}
	a := startOne("a")
	b := startOne("b") // while a runs
	aProcs := a.Processes()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	for _, p := range aProcs {
		if p.Alive() {
			t.Fatalf("%s still alive after Close", p.Name())
		}
		if conn, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
			conn.Close()
			t.Fatalf("%s still accepts connections on %s after Close", p.Name(), p.Addr())
		}
	}
	startOne("c")
	// b was not disturbed.
	for _, p := range b.Processes() {
		if !p.Alive() {
			t.Fatalf("%s of cluster b died", p.Name())
		}
	}
}

// TestConsulACL checks the ACL mode: the management token can do everything,
// anonymous nothing, CreateToken gives exactly its policy, and Restart keeps or
// wipes the state as asked.
func TestConsulACL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	consul, err := c.StartConsul(sandbox.ConsulOptions{ACL: true})
	if err != nil {
		t.Fatal(err)
	}
	if consul.Token() == "" {
		t.Fatal("no management token")
	}
	mgmt, err := consul.Client()
	if err != nil {
		t.Fatal(err)
	}
	if toks, _, err := mgmt.ACL().TokenList(nil); err != nil || len(toks) == 0 {
		t.Fatalf("management token list = %d tokens, %v", len(toks), err)
	}
	if svcs, _, err := mgmt.Catalog().Services(nil); err != nil || svcs["consul"] == nil {
		t.Fatalf("management catalog services = %v, %v", svcs, err)
	}
	anon, err := consul.ClientWithToken("anonymous")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := anon.ACL().TokenList(nil); !isForbidden(err) {
		t.Fatalf("anonymous token list: err = %v, want 403", err)
	}
	if _, err := anon.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil); !isForbidden(err) {
		t.Fatalf("anonymous KV put: err = %v, want 403", err)
	}

	secret, err := consul.CreateToken(ctx, `key_prefix "app/" { policy = "write" }`)
	if err != nil {
		t.Fatal(err)
	}
	checkToken := func(wantValid bool) {
		t.Helper()
		app, err := consul.ClientWithToken(secret)
		if err != nil {
			t.Fatal(err)
		}
		_, err = app.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil)
		if wantValid && err != nil || !wantValid && err == nil {
			t.Fatalf("KV put app/x with the created token: err = %v, want valid=%v", err, wantValid)
		}
		if _, err := app.KV().Put(&api.KVPair{Key: "other/x", Value: []byte("1")}, nil); !isForbidden(err) {
			t.Fatalf("KV put other/x with the created token: err = %v, want 403", err)
		}
	}
	checkToken(true)

	// DNS answers with ACLs on (the DNS token is set).
	if ips, err := consul.LookupA(ctx, "consul.service.consul"); err != nil || !slices.Equal(ips, []string{consul.IP()}) {
		t.Fatalf("DNS consul.service.consul = %v, %v", ips, err)
	}

	if err := consul.Restart(false); err != nil {
		t.Fatal(err)
	}
	checkToken(true)
	if err := consul.Restart(true); err != nil {
		t.Fatal(err)
	}
	checkToken(false)
	if _, _, err := mgmt.ACL().TokenList(nil); err != nil {
		t.Fatalf("management token after wipe: %v", err)
	}
}

func isForbidden(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == 403
}

func addrs(ps []*sandbox.Process) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Addr())
	}
	slices.Sort(out)
	return out
}

func sortedAddrs(ms []map[string]string) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, net.JoinHostPort(m["ip"], m["port"]))
	}
	slices.Sort(out)
	return out
}

// TestSharedSentinels puts two password-protected shards under the same three
// Sentinels, added at runtime, and fails one of them over.
func TestSharedSentinels(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Redis and Sentinel")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	const pw = "s3cret"
	sentinels, err := c.StartSentinels(3, sandbox.SentinelOptions{DownAfter: 500 * time.Millisecond, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	alpha, err := c.StartShard(sandbox.ShardOptions{Name: "alpha", Replicas: 1, Use: sentinels, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	beta, err := c.StartShard(sandbox.ShardOptions{Name: "beta", Replicas: 1, Use: sentinels, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.Do(ctx, beta.Master.Addr(), "PING"); err == nil {
		t.Fatal("PING without the password succeeded")
	}
	for _, sh := range []*sandbox.Shard{alpha, beta} {
		if m, err := sh.CurrentMaster(ctx); err != nil || m != sh.Master.Addr() {
			t.Fatalf("%s: CurrentMaster = %q, %v; want %s", sh.Name, m, err, sh.Master.Addr())
		}
	}
	old := beta.Master.Addr()
	if err := beta.Master.Kill(); err != nil {
		t.Fatal(err)
	}
	got, err := beta.WaitFailover(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if got != beta.Replicas[0].Addr() {
		t.Fatalf("beta failed over to %s, want %s", got, beta.Replicas[0].Addr())
	}
	if m, err := alpha.CurrentMaster(ctx); err != nil || m != alpha.Master.Addr() {
		t.Fatalf("alpha moved: CurrentMaster = %q, %v", m, err)
	}
}
