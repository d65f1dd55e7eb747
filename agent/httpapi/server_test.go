package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestServer(t *testing.T, src Source, opts ...func(*Options)) *httptest.Server {
	t.Helper()
	o := Options{Source: src, Now: func() time.Time { return testNow }}
	for _, f := range opts {
		f(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestNewNeedsSource(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a Source must fail")
	}
}

func TestHealthz(t *testing.T) {
	ts := newTestServer(t, &fakeSource{})
	resp, body := get(t, ts.URL+"/healthz")
	if resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("healthz = %d %q", resp.StatusCode, body)
	}
}

func TestStatusJSON(t *testing.T) {
	src := &fakeSource{}
	src.set(fixture(testNow, true))
	ts := newTestServer(t, src)
	resp, body := get(t, ts.URL+"/v1/status")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content type %q", ct)
	}
	var snap status.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatal(err)
	}
	if snap.Node != "cache-1" || len(snap.Failovers) != 2 || len(snap.Proxies) != 1 || snap.Proxies[0].Blackout != 2300*time.Microsecond {
		t.Errorf("snapshot round trip lost data: %+v", snap)
	}
	for _, key := range []string{`"instances"`, `"sentinels"`, `"masters"`, `"proxies"`, `"events"`, `"failovers"`, `"last_blackout_ns"`, `"config_hash"`} {
		if !strings.Contains(body, key) {
			t.Errorf("/v1/status lacks %s", key)
		}
	}
}

func TestStatusJSONEmptyListsAreArrays(t *testing.T) {
	ts := newTestServer(t, &fakeSource{})
	_, body := get(t, ts.URL+"/v1/status")
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"instances", "local_sentinels", "sentinels", "masters", "proxies", "events", "failovers"} {
		if _, ok := m[k].([]any); !ok {
			t.Errorf("%s = %#v, want []", k, m[k])
		}
	}
	if m["now"] == "0001-01-01T00:00:00Z" {
		t.Errorf("now not filled in")
	}
	_, body = get(t, ts.URL+"/v1/cluster")
	if !strings.Contains(body, `"shards":[]`) || !strings.Contains(body, `"sentinels":[]`) || !strings.Contains(body, `"proxies":[]`) {
		t.Errorf("/v1/cluster = %s", body)
	}
}

func TestClusterJSON(t *testing.T) {
	src := &fakeSource{}
	src.set(fixture(testNow, false))
	ts := newTestServer(t, src)
	_, body := get(t, ts.URL+"/v1/cluster?pretty")
	var c status.Cluster
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Shards) != 2 || c.Shards[0].Name != "orders" || c.Shards[0].Verdict != status.VerdictOK || c.Shards[1].Verdict != status.VerdictDegraded {
		t.Errorf("cluster = %+v", c.Shards)
	}
	if !strings.Contains(body, "\n  \"shards\"") {
		t.Errorf("?pretty did not indent")
	}
}

func TestClusterAssessedWhenSourceDidNot(t *testing.T) {
	src := &fakeSource{}
	src.set(status.Snapshot{}, status.Cluster{Shards: []status.Shard{{Name: "s"}}})
	ts := newTestServer(t, src)
	_, body := get(t, ts.URL+"/v1/cluster")
	if !strings.Contains(body, `"verdict":"down"`) || !strings.Contains(body, `"masters":[]`) {
		t.Errorf("cluster = %s", body)
	}
}

func TestClusterCacheSharesCalls(t *testing.T) {
	src := &fakeSource{delay: 50 * time.Millisecond}
	src.set(fixture(testNow, false))
	now := testNow
	var mu sync.Mutex
	ts := newTestServer(t, src, func(o *Options) {
		o.ClusterMaxAge = time.Second
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			get(t, ts.URL+"/v1/cluster")
		}()
	}
	wg.Wait()
	get(t, ts.URL+"/ui/live")
	if n := src.callCount(); n != 1 {
		t.Errorf("9 requests inside MaxAge made %d Cluster calls, want 1", n)
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	get(t, ts.URL+"/v1/cluster")
	if n := src.callCount(); n != 2 {
		t.Errorf("after MaxAge: %d calls, want 2", n)
	}
}

func TestClusterTimeout(t *testing.T) {
	src := &fakeSource{blockCtx: true}
	ts := newTestServer(t, src, func(o *Options) { o.ClusterTimeout = 50 * time.Millisecond })
	start := time.Now()
	_, body := get(t, ts.URL+"/v1/cluster")
	if time.Since(start) > 2*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
	if !strings.Contains(body, `"error":"consul: context deadline exceeded"`) {
		t.Errorf("cluster = %s", body)
	}
	// The page still renders, with the error in a banner.
	_, page := get(t, ts.URL+"/")
	if !strings.Contains(page, `class="banner bad"`) || !strings.Contains(page, "Consul is not answering") {
		t.Errorf("dashboard without Consul lacks the banner")
	}
}

func TestDashboardRendersFixture(t *testing.T) {
	src := &fakeSource{}
	src.set(fixture(testNow, true))
	ts := newTestServer(t, src)
	resp, page := get(t, ts.URL+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`<title>⚠ 2 shards degraded — redis-consul-agent</title>`,
		`data-shard="orders" data-master="10.0.1.12:6379"`,
		`data-shard="sessions" data-master="10.0.2.21:6379"`,
		`3/3 agree`, `2/3 agree`,
		`says 10.0.2.22:6379`,
		`data-failover="orders" data-to="10.0.1.12:6379"`,
		`>4.2ms<`, `>9.8ms<`, // the timeline's reaction times
		`Redis unreachable`,
		`data-pool="alpha"`, `✔ Sentinel master`,
		`/assets/app.css?v=`, `/assets/app.js?v=`,
		`&#43;switch-master`, // html/template escapes the plus
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Self-contained: nothing loaded from another origin.
	if m := regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).FindString(page); m != "" {
		t.Errorf("page loads from elsewhere: %s", m)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP = %q", csp)
	}
}

func TestDashboardRendersEmpty(t *testing.T) {
	ts := newTestServer(t, &fakeSource{})
	resp, page := get(t, ts.URL+"/")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, page)
	}
	for _, want := range []string{"No Redis registered in Consul yet.", "No failover since this agent started.", "Nothing happened yet.", "no shard registered in Consul"} {
		if !strings.Contains(page, want) {
			t.Errorf("empty page lacks %q", want)
		}
	}
}

func TestLiveFragment(t *testing.T) {
	src := &fakeSource{}
	src.set(fixture(testNow, false))
	ts := newTestServer(t, src)
	_, a := get(t, ts.URL+"/ui/live")
	if strings.Contains(a, "<html") || !strings.Contains(a, `id="summary"`) || !strings.Contains(a, `id="shards"`) {
		t.Fatalf("fragment is not the live sections:\n%s", a)
	}
	// The same data gives the same bytes, so the page swaps nothing.
	_, b := get(t, ts.URL+"/ui/live")
	if a != b {
		t.Errorf("two renders of the same data differ")
	}
	if n := strings.Count(a, `id="summary"`); n != 1 {
		t.Errorf("summary appears %d times", n)
	}
	_, page := get(t, ts.URL+"/")
	if n := strings.Count(page, `id="summary"`); n != 1 {
		t.Errorf("summary appears %d times in the page", n)
	}
}

func TestAssets(t *testing.T) {
	ts := newTestServer(t, &fakeSource{})
	_, page := get(t, ts.URL+"/")
	css := regexp.MustCompile(`/assets/app\.css\?v=[0-9a-f]+`).FindString(page)
	if css == "" {
		t.Fatal("no fingerprinted CSS link")
	}
	resp, body := get(t, ts.URL+css)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || !strings.Contains(body, "--bg") {
		t.Errorf("css = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("fingerprinted asset Cache-Control = %q", cc)
	}
	resp, _ = get(t, ts.URL+"/assets/app.js")
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("js = %s %s", resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
	}
	for _, p := range []string{"/assets/page.html", "/assets/nope.js", "/assets/../templates.go", "/nope"} {
		if resp, _ := get(t, ts.URL+p); resp.StatusCode != 404 {
			t.Errorf("GET %s = %d, want 404", p, resp.StatusCode)
		}
	}
	resp, err := http.Post(ts.URL+"/v1/status", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/status = %d", resp.StatusCode)
	}
}

// TestMetricsLint serves the agent's real collectors with values in every
// series and checks the exposition with promlint, the client library's
// equivalent of `promtool check metrics`.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := telemetry.NewMetrics(reg)
	m.SetBuild("v1.2.3", "abc123")
	telemetry.SetOneOf(m.RedisRole, []string{"redis-10.0.0.1-6379", "s1"}, "master", "master", "replica", "unknown")
	telemetry.SetOneOf(m.CheckStatus, []string{"redis-10.0.0.1-6379"}, "passing", "passing", "warning", "critical")
	m.SentinelUp.WithLabelValues("10.0.0.1:26379").Set(1)
	m.SentinelEvents.WithLabelValues("+switch-master").Inc()
	m.Failovers.WithLabelValues("s1").Inc()
	m.ConsulWrites.WithLabelValues("register").Inc()
	m.ConsulWriteFailures.WithLabelValues("register").Inc()
	m.Reaction.WithLabelValues("consul").Observe(0.004)
	m.Reaction.WithLabelValues("twemproxy").Observe(0.011)
	m.ProxyRestarts.WithLabelValues("main", "ok").Inc()
	m.ProxyRollbacks.WithLabelValues("main", "probe").Inc()
	m.ProxyRestartDuration.WithLabelValues("main").Observe(0.004)
	m.ProxyConfigWrites.WithLabelValues("main").Inc()
	m.ProxyPipelineFailures.WithLabelValues("main", "validate").Inc()

	ts := newTestServer(t, &fakeSource{}, func(o *Options) { o.Gatherer = reg })
	resp, body := get(t, ts.URL+"/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics = %d", resp.StatusCode)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, series := range []string{
		`redis_consul_agent_redis_role{master_name="s1",role="master",service_id="redis-10.0.0.1-6379"} 1`,
		`redis_consul_agent_sentinel_up{sentinel="10.0.0.1:26379"} 1`,
		`redis_consul_agent_sentinel_events_total{type="+switch-master"} 1`,
		`redis_consul_agent_failovers_total{master_name="s1"} 1`,
		`redis_consul_agent_consul_writes_total{op="register"} 1`,
		`redis_consul_agent_consul_write_failures_total{op="register"} 1`,
		`redis_consul_agent_reaction_seconds_bucket{target="consul",le="0.005"} 1`,
		`redis_consul_agent_reaction_seconds_count{target="twemproxy"} 1`,
		`redis_consul_agent_twemproxy_restarts_total{proxy="main",result="ok"} 1`,
		`redis_consul_agent_twemproxy_rollbacks_total{proxy="main",step="probe"} 1`,
		`redis_consul_agent_twemproxy_restart_duration_seconds_count{proxy="main"} 1`,
		`redis_consul_agent_build_info{commit="abc123",goversion=`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

func TestServeAndShutdown(t *testing.T) {
	s, err := New(Options{Addr: "127.0.0.1:0", Source: &fakeSource{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	resp, body := get(t, "http://"+s.Addr()+"/healthz")
	if resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("healthz = %d %q", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	// A busy address fails at Listen, not later.
	busy, err := New(Options{Addr: s.Addr(), Source: &fakeSource{}})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := New(Options{Addr: "127.0.0.1:0", Source: &fakeSource{}})
	if err := other.Listen(); err != nil {
		t.Fatal(err)
	}
	defer other.ln.Close()
	busy.opts.Addr = other.Addr()
	if err := busy.Listen(); err == nil || !strings.Contains(err.Error(), "http listen on") {
		t.Errorf("Listen on a busy address = %v", err)
	}
}
