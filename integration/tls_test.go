package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestTLS: a shard of three and its three Sentinels on TLS only (no plain
// port), every server requiring a client certificate from the test's CA and
// replicating over TLS. An agent beside each Redis node, given the CA and a
// client certificate in redis[].tls and sentinel.tls, registers the shard;
// one more registers the Sentinels (sentinels[].tls, once given and once
// inherited from sentinel.tls). A kill -9 of the master is followed in
// Consul DNS with never two masters in between. Then an agent given a
// second CA's certificate says, in its log and /v1/status, which peer's
// certificate it could not verify, and recovers once given the right CA.
func TestTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, consul, admin := consulStack(t)
	ca, err := sandbox.NewCA(t.TempDir(), "redis")
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "tlsshard", Replicas: 2, TLS: ca})
	if err != nil {
		t.Fatal(err)
	}
	tlsAssertTLSOnly(ctx, t, ca, shard)

	certFile, keyFile, err := ca.Issue("agent", nil)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := map[string]any{"enabled": true, "ca_file": ca.CertFile, "cert_file": certFile, "key_file": keyFile}
	agents := map[string]*sandbox.Agent{}
	configs := map[string]map[string]any{}
	for _, r := range shard.Nodes() {
		cfg := tlsAgentConfig(consul, shard, r, clientTLS)
		a, err := c.StartAgent("", "agent-"+r.Name(), r.IP(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		agents[r.Addr()], configs[r.Addr()] = a, cfg
	}
	scfg := secSentinelsConfig(map[string]any{"address": consul.HTTPAddr(), "ttl": "2s"}, shard.Sentinels)
	scfg["sentinel"] = map[string]any{"tls": clientTLS}
	scfg["sentinels"].([]any)[0].(map[string]any)["tls"] = clientTLS // the others inherit sentinel.tls
	if _, err := c.StartAgent("", "agent-sentinels", shard.Sentinels[0].IP(), scfg); err != nil {
		t.Fatal(err)
	}

	master := shard.Master
	// Registered within a minute, or the TLS setup does not work: fail
	// then rather than at the test's deadline.
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	defer scancel()
	for _, r := range shard.Nodes() {
		secWaitHealth(sctx, t, admin, "redis", secRedisID(r), api.HealthPassing)
	}
	var sentinelIPs []string
	for _, s := range shard.Sentinels {
		secWaitHealth(sctx, t, admin, "redis-sentinel", secSentinelID(s), api.HealthPassing)
		sentinelIPs = append(sentinelIPs, s.IP())
	}
	secWaitDNS(sctx, t, consul, "tlsshard-master.redis.service.consul", master.IP())
	secWaitDNS(sctx, t, consul, "tlsshard-replica.redis.service.consul", shard.Replicas[0].IP(), shard.Replicas[1].IP())
	secWaitDNS(sctx, t, consul, "redis-sentinel.service.consul", sentinelIPs...)

	// kill -9 the master; DNS is sampled all through the failover.
	w := tlsWatchMasters(ctx, consul, "tlsshard-master.redis.service.consul", "master.redis.service.consul")
	if err := master.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	newAddr, err := shard.WaitFailover(ctx, master.Addr())
	if err != nil {
		t.Fatal(err)
	}
	promoted := shard.Node(newAddr)
	if promoted == nil {
		t.Fatalf("the Sentinels promoted %s, not a node of the shard", newAddr)
	}
	secWaitDNS(ctx, t, consul, "tlsshard-master.redis.service.consul", promoted.IP())
	followed := time.Since(killed)
	secWaitHealth(ctx, t, admin, "redis", secRedisID(master), api.HealthCritical)
	var left *sandbox.Redis
	for _, r := range shard.Replicas {
		if r != promoted {
			left = r
		}
	}
	secWaitDNS(ctx, t, consul, "tlsshard-replica.redis.service.consul", left.IP())
	samples, bad := w.stop()
	if len(bad) > 0 {
		t.Fatalf("two masters in DNS during the TLS failover (%d of %d samples): %v", len(bad), samples, bad)
	}
	t.Logf("kill -9 of %s: Consul DNS answered the new master %s %s after the kill; never two masters in %d DNS samples",
		master.Addr(), newAddr, followed.Round(time.Millisecond), samples)

	tlsWrongCA(ctx, t, admin, shard, left, agents[left.Addr()], configs[left.Addr()], clientTLS)
}

// tlsWrongCA restarts the agent beside r with a second CA's certificate as
// its ca_file: it must keep running and name, in its log at info level and
// in /v1/status, the Redis and a Sentinel whose certificates it could not
// verify; given the right CA again, it registers r as passing.
func tlsWrongCA(ctx context.Context, t *testing.T, admin *api.Client, shard *sandbox.Shard, r *sandbox.Redis, a *sandbox.Agent, cfg, good map[string]any) {
	t.Helper()
	other, err := sandbox.NewCA(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	wrong := map[string]any{}
	for k, v := range good {
		wrong[k] = v
	}
	wrong["ca_file"] = other.CertFile
	// At info level, what an operator runs with: the errors must show
	// without debug lines.
	cfg["log"] = map[string]any{"level": "info"}
	restart := func(tls map[string]any) int64 {
		if err := a.Stop(); err != nil {
			t.Fatal(err)
		}
		cfg["sentinel"].(map[string]any)["tls"] = tls
		cfg["redis"].([]any)[0].(map[string]any)["tls"] = tls
		if err := a.WriteConfig(cfg); err != nil {
			t.Fatal(err)
		}
		from := secLogSize(t, a)
		if err := a.Restart(); err != nil {
			t.Fatal(err)
		}
		return from
	}
	from := restart(wrong)
	exited := a.Exited()
	peers := []string{r.Addr(), shard.Sentinels[0].Addr()}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	var text string
	err = sandbox.Poll(wctx, "a log line naming x509 and each peer", func(context.Context) error {
		text = secLog(t, a, from)
		for _, peer := range peers {
			if tlsLineWith(text, "x509", peer) == "" {
				return fmt.Errorf("no line names both x509 and %s", peer)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("wrong CA: %v\n%s", err, text)
	}
	for _, peer := range peers {
		t.Logf("wrong CA, log: %s", tlsLineWith(text, "x509", peer))
	}
	var st string
	err = sandbox.Poll(wctx, "/v1/status names the peers it cannot verify", func(ctx context.Context) error {
		if st, err = secGet(ctx, a.URL("/v1/status")); err != nil {
			return err
		}
		for _, want := range peers {
			if !tlsNear(st, want, "x509") {
				return fmt.Errorf("no x509 error for %s", want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("wrong CA: %v\n%s", err, st)
	}
	select {
	case <-exited:
		t.Fatalf("the agent exited on a TLS error: %v", a.ExitErr())
	default:
	}
	if s := healthOf(t, admin, "redis", secRedisID(r)); s == api.HealthPassing {
		t.Fatalf("wrong CA: %s is passing in Consul", secRedisID(r))
	}

	restart(good)
	secWaitHealth(ctx, t, admin, "redis", secRedisID(r), api.HealthPassing)
}

// tlsAgentConfig is agentConfig with the client TLS settings on the Redis
// entry and the sentinel section.
func tlsAgentConfig(consul *sandbox.Consul, shard *sandbox.Shard, r *sandbox.Redis, clientTLS map[string]any) map[string]any {
	cfg := agentConfig(consul, shard, r, r.Name())
	cfg["sentinel"].(map[string]any)["tls"] = clientTLS
	cfg["redis"].([]any)[0].(map[string]any)["tls"] = clientTLS
	return cfg
}

// tlsAssertTLSOnly checks that the shard's servers are really TLS only and
// require a client certificate: plain RESP and TLS without a certificate
// both fail, TLS with one answers.
func tlsAssertTLSOnly(ctx context.Context, t *testing.T, ca *sandbox.CA, shard *sandbox.Shard) {
	t.Helper()
	noCert, err := ca.ClientTLS("", "")
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]string{shard.Master.Addr(): "redis", shard.Sentinels[0].Addr(): "sentinel"}
	for addr, who := range servers {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if v, err := sandbox.Do(qctx, addr, "PING"); err == nil {
			t.Fatalf("%s %s answers plain PING: %v", who, addr, v)
		}
		if v, err := sandbox.DoTLS(qctx, addr, noCert, "PING"); err == nil {
			t.Fatalf("%s %s answers PING over TLS without a client certificate: %v", who, addr, v)
		}
		cancel()
	}
	if v, err := sandbox.DoTLS(ctx, shard.Master.Addr(), shard.Master.TLS, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING over TLS with a certificate: %v %v", v, err)
	}
}

// tlsLineWith returns the first line of text that contains every one of want.
func tlsLineWith(text string, want ...string) string {
	for _, line := range strings.Split(text, "\n") {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return line
		}
	}
	return ""
}

// tlsNear reports whether b occurs within 400 bytes after an occurrence of
// a in s (a JSON object that names a peer and then its error).
func tlsNear(s, a, b string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], a)
		if j < 0 {
			return false
		}
		end := min(len(s), i+j+len(a)+400)
		if strings.Contains(s[i+j:end], b) {
			return true
		}
		i += j + len(a)
	}
}

// tlsMasterWatch samples Consul DNS for master names every few
// milliseconds and remembers every answer with more than one address.
type tlsMasterWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples int
	bad     []string
}

func tlsWatchMasters(ctx context.Context, consul *sandbox.Consul, names ...string) *tlsMasterWatch {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	w := &tlsMasterWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			for _, name := range names {
				qctx, qcancel := context.WithTimeout(ctx, time.Second)
				ips, err := consul.LookupA(qctx, name)
				qcancel()
				w.mu.Lock()
				if err == nil {
					w.samples++
				}
				if len(ips) > 1 {
					w.bad = append(w.bad, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), name, ips))
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(3 * time.Millisecond):
			}
		}
	}()
	return w
}

// stop ends the watch and returns how many answers it got and the bad
// ones; no answer at all is bad too.
func (w *tlsMasterWatch) stop() (int, []string) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.samples == 0 {
		return 0, []string{"no DNS answer at all"}
	}
	return w.samples, w.bad
}
