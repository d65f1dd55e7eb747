package httpapi

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/internal/statustest"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// frontendEntry is a HAProxy frontend as the driver registers it.
func frontendEntry(node, frontend, ip string, servers ...consulname.ProxyServer) *api.ServiceEntry {
	meta := map[string]string{consulname.MetaProxy: "edge", consulname.MetaPool: frontend}
	maps.Copy(meta, consulname.FormatServers(servers))
	return statustest.Entry(node, "haproxy-"+node+"-edge-"+frontend, ip, 6380, []string{frontend}, meta, api.HealthPassing, "frontend "+frontend)
}

// TestAddFrontends: a HAProxy frontend shows among the proxies with kind
// haproxy after the twemproxy pools, and whether each server it covers
// points at the Sentinel truth this agent holds.
func TestAddFrontends(t *testing.T) {
	truth := []status.Master{{Name: "s1", Addr: "10.0.0.2:6379"}, {Name: "s2", Addr: "10.0.0.3:6379"}}
	pool := statustest.Entry("p1", "twemproxy-p1-main", "10.0.1.1", 22121, []string{"main"}, map[string]string{consulname.MetaPool: "main"}, api.HealthPassing, "")
	c := BuildCluster(nil, nil, statustest.Instances([]*api.ServiceEntry{pool}), truth, nil)
	AddFrontends(&c, statustest.Instances([]*api.ServiceEntry{
		frontendEntry("h1", "rw", "10.0.2.1",
			consulname.ProxyServer{Name: "rw/s1", MasterName: "s1", Addr: "10.0.0.2:6379"},
			consulname.ProxyServer{Name: "rw/s2", MasterName: "s2", Addr: "10.0.0.3:6379"}),
		frontendEntry("h2", "old", "10.0.2.2", consulname.ProxyServer{Name: "rw/s1", MasterName: "s1", Addr: "10.0.0.1:6379"}),
		frontendEntry("h3", "gone", "10.0.2.3", consulname.ProxyServer{Name: "rw/nope", MasterName: "s1"}),
		frontendEntry("h4", "unknown", "10.0.2.4", consulname.ProxyServer{Name: "rw/s9", MasterName: "s9", Addr: "10.0.0.9:6379"}),
	}), truth)
	if len(c.Proxies) != 5 || c.Proxies[0].Kind != status.ProxyTwemproxy || c.Proxies[0].Pool != "main" {
		t.Fatalf("proxies: %+v, want the twemproxy pool first, then 4 frontends", c.Proxies)
	}
	by := map[string]status.ClusterProxy{}
	for _, p := range c.Proxies[1:] {
		if p.Kind != status.ProxyHAProxy || p.Proxy != "edge" {
			t.Errorf("%s: kind %q proxy %q, want haproxy edge", p.Pool, p.Kind, p.Proxy)
		}
		by[p.Pool] = p
	}
	for _, tc := range []struct {
		pool    string
		follows *bool
		want    string // the first server's Want
	}{
		{"rw", ptr(true), ""},
		{"old", ptr(false), "10.0.0.2:6379"},
		{"gone", ptr(false), "10.0.0.2:6379"},
		{"unknown", nil, ""},
	} {
		p := by[tc.pool]
		if (p.Follows == nil) != (tc.follows == nil) || p.Follows != nil && *p.Follows != *tc.follows {
			t.Errorf("%s: follows %v, want %v", tc.pool, deref(p.Follows), deref(tc.follows))
		}
		if len(p.Servers) == 0 || p.Servers[0].Want != tc.want {
			t.Errorf("%s: servers %+v, want the first to want %q", tc.pool, p.Servers, tc.want)
		}
	}
	if s := by["rw"].Servers; len(s) != 2 || s[1].Name != "rw/s2" || !s[1].Matches {
		t.Errorf("rw servers: %+v", s)
	}
}

func ptr(b bool) *bool { return &b }

func deref(b *bool) string {
	if b == nil {
		return "nil"
	}
	if *b {
		return "true"
	}
	return "false"
}

// TestDashboardShowsHAProxy: the page lists a HAProxy frontend beside the
// twemproxy pools with its servers, the local agent's HAProxy block (server,
// where it points, last move, error) and the HAProxy column of the timeline.
func TestDashboardShowsHAProxy(t *testing.T) {
	snap, cl := fixture(testNow, true)
	truth := []status.Master{{Name: "orders", Addr: "10.0.1.12:6379"}}
	AddFrontends(&cl, statustest.Instances([]*api.ServiceEntry{
		frontendEntry("edge-1", "rw", "10.0.4.1", consulname.ProxyServer{Name: "redis-rw/orders", MasterName: "orders", Addr: "10.0.1.11:6379"}),
	}), truth)
	snap.HAProxy = []status.HAProxyStatus{{
		Name: "edge", RuntimeAPI: "/run/haproxy/admin.sock", Reachable: true, Moves: 1,
		Servers:   []status.HAProxyServer{{Backend: "redis-rw", Server: "orders", MasterName: "orders", Addr: "10.0.1.12:6379", Matches: true}},
		Frontends: []status.HAProxyFrontend{{Name: "rw", ServiceID: "haproxy-edge-1-edge-rw", Status: api.HealthPassing}},
		LastMove:  &status.HAProxyMove{At: testNow.Add(-time.Second), Server: "redis-rw/orders", From: "10.0.1.11:6379", To: "10.0.1.12:6379", Reaction: 1500 * time.Microsecond},
		LastError: "runtime API refused: Permission denied",
	}}
	for i := range snap.Failovers {
		snap.Failovers[i].HAProxyAt = snap.Failovers[i].At.Add(7300 * time.Microsecond)
	}
	for i := range cl.Failovers {
		cl.Failovers[i].HAProxyAt = cl.Failovers[i].At.Add(7300 * time.Microsecond)
	}
	src := &fakeSource{}
	src.set(snap, cl)
	ts := newTestServer(t, src)
	_, page := get(t, ts.URL+"/")
	for _, want := range []string{
		`data-pool="alpha" data-kind="twemproxy"`,
		`data-pool="rw" data-kind="haproxy"`,
		`1 server not on the Sentinel master`, // the frontend's Meta says 10.0.1.11, the truth 10.0.1.12
		`data-server="redis-rw/orders"`, `✖ Sentinel says 10.0.1.12:6379`,
		`id="haproxy-local"`, `data-haproxy="edge"`, `runtime API refused: Permission denied`,
		`redis-rw/orders <span class="mono">10.0.1.11:6379 → 10.0.1.12:6379</span>`,
		`data-route="haproxy"`,
		`>7.3ms<`, `class="bar haproxy"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
