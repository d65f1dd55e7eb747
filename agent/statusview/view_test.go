package statusview

import (
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

// TestFollow: the dashboard's word for a passing pool says what the pool's
// check checked, never more (issue 13: "on the right masters" beside a
// check that said no server followed Sentinel).
func TestFollow(t *testing.T) {
	on := status.Server{Name: "a", Follows: true, Matches: true}
	off := status.Server{Name: "b", Follows: true, Matches: false, Want: "10.0.0.2:6379"}
	unnamed := status.Server{Name: "c", Matches: true}
	for _, tc := range []struct {
		name    string
		servers []status.Server
		want    string
	}{
		{"every server on its master", []status.Server{on, on}, "on the Sentinel masters"},
		{"none named after a Sentinel master", []status.Server{unnamed}, "not following Sentinel"},
		{"no server at all", nil, "not following Sentinel"},
		{"some follow", []status.Server{on, unnamed}, "1 of 2 servers follow Sentinel"},
		{"one elsewhere", []status.Server{on, off, unnamed}, "1 server not on the Sentinel master"},
	} {
		if got := follow(tc.servers); got != tc.want {
			t.Errorf("%s: follow = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestHAProxyInView: a frontend gets the local driver's block when this
// agent drives it and its words from the servers its Meta names; the
// HAProxy servers route their shard; the timeline carries HAProxy's delay.
func TestHAProxyInView(t *testing.T) {
	at := time.Unix(1000, 0)
	no := false
	cl := status.Cluster{
		Shards: []status.Shard{{Name: "orders"}},
		Proxies: []status.ClusterProxy{
			{ClusterNode: status.ClusterNode{ServiceID: "haproxy-e1-edge-rw"}, Kind: status.ProxyHAProxy, Pool: "rw", Follows: &no,
				Servers: []status.ClusterProxyServer{{Name: "redis-rw/orders", MasterName: "orders", Addr: "10.0.0.1:6379", Want: "10.0.0.2:6379"}}},
			{ClusterNode: status.ClusterNode{ServiceID: "haproxy-e2-edge-rw"}, Kind: status.ProxyHAProxy, Pool: "rw"},
		},
		Failovers: []status.ClusterFailover{{Master: "orders", To: "10.0.0.2:6379", At: at, HAProxyAt: at.Add(3 * time.Millisecond)}},
	}
	snap := status.Snapshot{HAProxy: []status.HAProxyStatus{{
		Name:      "edge",
		Servers:   []status.HAProxyServer{{Backend: "redis-rw", Server: "orders", MasterName: "orders", Addr: "10.0.0.1:6379", Want: "10.0.0.2:6379"}},
		Frontends: []status.HAProxyFrontend{{Name: "rw", ServiceID: "haproxy-e1-edge-rw"}},
	}}}
	v := Build(snap, cl, at, 0)
	if p := v.Proxies[0]; p.HAProxy == nil || p.HAProxy.Name != "edge" || p.Frontend == nil || p.Follow != "1 server not on the Sentinel master" {
		t.Errorf("driven frontend: %+v", p)
	}
	if p := v.Proxies[1]; p.HAProxy != nil || p.Follow != "names no server" {
		t.Errorf("another agent's frontend: %+v", p)
	}
	if r := v.Shards[0].Routes; len(r) != 1 || r[0].Kind != status.ProxyHAProxy || r[0].Pool != "redis-rw/orders" || r[0].Matches {
		t.Errorf("routes: %+v", r)
	}
	if f := v.Timeline[0]; f.HAProxy != 3*time.Millisecond {
		t.Errorf("timeline HAProxy = %s, want 3ms", f.HAProxy)
	}
}
