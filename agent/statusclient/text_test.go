package statusclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/httpapi"
	"github.com/seed42ef8afe/redis-consul-agent/agent/internal/statustest"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

// testNow is the clock of the fixture, as in agent/httpapi's tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func fixture(now time.Time, failedOver bool) (status.Snapshot, status.Cluster) {
	return statustest.Fixture(now, failedOver, httpapi.BuildCluster)
}

type staticSource struct {
	snap    status.Snapshot
	cluster status.Cluster
}

func (s staticSource) Snapshot() status.Snapshot              { return s.snap }
func (s staticSource) Cluster(context.Context) status.Cluster { return s.cluster }

func newTestServer(t *testing.T, snap status.Snapshot, cl status.Cluster) *httptest.Server {
	t.Helper()
	s, err := httpapi.New(httpapi.Options{Source: staticSource{snap, cl}, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func TestWriteTextFull(t *testing.T) {
	snap, cl := fixture(testNow, true)
	var b strings.Builder
	if err := WriteText(&b, status.Report{Status: snap, Cluster: cl}, TextOptions{Now: testNow}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"redis-consul-agent on cache-1 (v0.4.0), up 3h20m",
		"Cluster: 2 shards degraded (0 ok, 2 degraded, 0 without master, 0 split brain)",
		"SHARDS (as Consul sees them)",
		"orders    DEGRADED  10.0.1.12:6379  3/3 agree  1/1 linked  42s ago",
		"! 10.0.1.11:6379 is critical: Redis unreachable",
		"orders    none     10.0.1.11:6379",
		"10.0.1.13:26379  cache-3  passing  up    NO",
		"alpha  10.0.3.31:22121  proxy-1  passing",
		"FAILOVERS (seen by this agent, newest first)",
		"10.0.1.11:6379 -> 10.0.1.12:6379  4.2ms   9.8ms",
		"LOCAL REDIS", "SENTINEL TRUTH", "SENTINEL LINKS", "TWEMPROXY MANAGED HERE",
		"main   alpha  10.0.3.31:22121  orders    10.0.1.12:6379  yes",
		"EVENTS (newest 9 of 9)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log("\n" + out)
	}
}

func TestWriteTextEmpty(t *testing.T) {
	var b strings.Builder
	err := WriteText(&b, status.Report{Cluster: status.Cluster{Error: "connection refused"}}, TextOptions{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	want := "redis-consul-agent on — (—)\nCluster: Consul unreachable\nConsul: connection refused\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteTextReportsWriteErrors(t *testing.T) {
	snap, cl := fixture(testNow, true)
	if err := WriteText(failWriter{}, status.Report{Status: snap, Cluster: cl}, TextOptions{}); err == nil {
		t.Fatal("want the write error")
	}
}

func TestClient(t *testing.T) {
	snap0, cl0 := fixture(testNow, true)
	ts := newTestServer(t, snap0, cl0)
	c := NewClient(strings.TrimPrefix(ts.URL, "http://"))
	snap, raw, err := c.Status(context.Background())
	if err != nil || snap.Node != "cache-1" || len(raw) == 0 {
		t.Fatalf("Status = %v, %v", snap.Node, err)
	}
	cl, _, err := c.Cluster(context.Background())
	if err != nil || len(cl.Shards) != 2 {
		t.Fatalf("Cluster = %d shards, %v", len(cl.Shards), err)
	}

	// Nobody listening: the error says what to do.
	dead := httptest.NewServer(http.NotFoundHandler())
	addr := dead.URL
	dead.Close()
	_, _, err = NewClient(addr).Status(context.Background())
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "no agent answering at "+addr+": is `redis-consul-agent agent` running?") {
		t.Errorf("err = %v", err)
	}

	// Something else answering: not "unreachable", and says what it got.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	_, _, err = NewClient(other.URL).Status(context.Background())
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "404") {
		t.Errorf("err = %v", err)
	}
}

func TestNewClientAddresses(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8765":         "http://127.0.0.1:8765",
		":8765":                  "http://127.0.0.1:8765",
		"http://10.0.0.1:8765/":  "http://10.0.0.1:8765",
		"https://agent.example/": "https://agent.example",
	} {
		if got := NewClient(in).BaseURL; got != want {
			t.Errorf("NewClient(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriteTextMergedTimeline: with a story merged from the peers, the
// table shows each failover once with every agent's step, and names the
// peer that did not answer.
func TestWriteTextMergedTimeline(t *testing.T) {
	at := testNow.Add(-30 * time.Second)
	ms := func(n int) time.Time { return at.Add(time.Duration(n) * time.Millisecond) }
	cl := status.Cluster{
		Failovers: []status.ClusterFailover{{
			Master: "orders", From: "10.0.1.11:6379", To: "10.0.1.12:6379", At: at,
			Nodes:       []string{"cache-3", "cache-2", "proxy-1"},
			Phases:      []status.Phase{{Name: "down", At: ms(-400), Node: "cache-3"}},
			Actions:     []status.Action{{Node: "cache-2", At: ms(4), What: "tagged 10.0.1.12:6379 master in Consul"}, {Node: "proxy-1", At: ms(9), What: "moved twemproxy to 10.0.1.12:6379"}, {Node: "edge-1", At: ms(6), What: "HAProxy moved to 10.0.1.12:6379"}},
			ConsulAt:    ms(4),
			TwemproxyAt: ms(9),
			HAProxyAt:   ms(6),
			Gap:         409 * time.Millisecond,
		}},
		Peers: []status.Peer{{Node: "cache-2", Addr: "10.0.1.12:8765"}, {Node: "proxy-1", Addr: "10.0.3.31:8765"}, {Node: "cache-9", Addr: "10.0.1.19:8765", Error: "connection refused"}},
	}
	var b strings.Builder
	if err := WriteText(&b, status.Report{Status: status.Snapshot{Now: testNow}, Cluster: cl}, TextOptions{Now: testNow}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"FAILOVERS (merged from this agent and 2 more, newest first)",
		"10.0.1.11:6379 -> 10.0.1.12:6379  4.0ms   9.0ms      6.0ms    409ms",
		"+406ms edge-1: HAProxy moved to 10.0.1.12:6379",
		"0 cache-3: Sentinel: down",
		"+404ms cache-2: tagged 10.0.1.12:6379 master in Consul",
		"+409ms proxy-1: moved twemproxy to 10.0.1.12:6379",
		"! agent cache-9 (10.0.1.19:8765) did not answer: connection refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Count(out, "-> 10.0.1.12:6379") != 1 {
		t.Errorf("the failover must be listed once")
	}
	if t.Failed() {
		t.Log("\n" + out)
	}
}

// TestWriteTextHAProxy: a HAProxy frontend is listed among the proxies
// with the servers its Meta names and whether they follow Sentinel; the
// local agent's HAProxy block names its servers, where they point, the
// last move and the last error.
func TestWriteTextHAProxy(t *testing.T) {
	follows := false
	cl := status.Cluster{Proxies: []status.ClusterProxy{{
		ClusterNode: status.ClusterNode{ServiceID: "haproxy-edge-1-edge-rw", Node: "edge-1", Addr: "10.0.4.1:6380", Status: "warning", Output: "frontend rw: redis-rw/orders is 10.0.1.11:6379 but Sentinel says 10.0.1.12:6379"},
		Kind:        status.ProxyHAProxy, Pool: "rw", Proxy: "edge", Follows: &follows,
		Servers: []status.ClusterProxyServer{{Name: "redis-rw/orders", MasterName: "orders", Addr: "10.0.1.11:6379", Want: "10.0.1.12:6379"}},
	}}}
	snap := status.Snapshot{Now: testNow, HAProxy: []status.HAProxyStatus{{
		Name: "edge", RuntimeAPI: "/run/haproxy/admin.sock", Reachable: true, Moves: 3, Reconciles: 40,
		Servers:   []status.HAProxyServer{{Backend: "redis-rw", Server: "orders", MasterName: "orders", Addr: "10.0.1.12:6379", Matches: true}},
		Frontends: []status.HAProxyFrontend{{Name: "rw", ServiceID: "haproxy-edge-1-edge-rw", Status: "passing", Why: "frontend rw: 1 servers follow Sentinel"}},
		LastMove:  &status.HAProxyMove{At: testNow.Add(-5 * time.Second), Server: "redis-rw/orders", From: "10.0.1.11:6379", To: "10.0.1.12:6379", Reaction: 1200 * time.Microsecond},
		LastError: "shut down the sessions of redis-rw/orders: refused", LastErrorAt: testNow.Add(-4 * time.Second),
	}}}
	var b strings.Builder
	if err := WriteText(&b, status.Report{Status: snap, Cluster: cl}, TextOptions{Now: testNow, Width: 200}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"PROXIES (twemproxy pools, HAProxy frontends)",
		"haproxy  rw    10.0.4.1:6380  edge-1  warning  1 server not on the Sentinel master",
		"redis-rw/orders -> 10.0.1.11:6379 (NOT the Sentinel master 10.0.1.12:6379)",
		"HAPROXY DRIVEN HERE",
		"edge     /run/haproxy/admin.sock  up   redis-rw/orders 10.0.1.11:6379 -> 10.0.1.12:6379 5.0s ago  1.2ms     3      40",
		"! shut down the sessions of redis-rw/orders: refused (4.0s ago)",
		"edge     redis-rw/orders  orders  10.0.1.12:6379  yes",
		"edge     rw        —        haproxy-edge-1-edge-rw  passing",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log("\n" + out)
	}
}
