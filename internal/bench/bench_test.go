package bench

import (
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name               string
		xs                 []float64
		p50, p95, min, max float64
	}{
		{"one", []float64{7}, 7, 7, 7, 7},
		{"two", []float64{9, 1}, 1, 9, 1, 9},
		{"twenty", []float64{20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 10, 19, 1, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := summarize(tc.xs, "ms")
			if s.N != len(tc.xs) || s.P50 != tc.p50 || s.P95 != tc.p95 || s.Min != tc.min || s.Max != tc.max {
				t.Errorf("got %+v, want p50 %v p95 %v min %v max %v", s, tc.p50, tc.p95, tc.min, tc.max)
			}
		})
	}
	if s := summarize(nil, "ms"); s.N != 0 || !math.IsNaN(s.P50) {
		t.Errorf("empty: %+v", s)
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP redis_consul_agent_consul_writes_total Writes.
# TYPE redis_consul_agent_consul_writes_total counter
redis_consul_agent_consul_writes_total{op="register"} 3
redis_consul_agent_consul_writes_total{op="ttl"} 40
redis_consul_agent_twemproxy_restarts_total{proxy="sup",result="ok"} 2
redis_consul_agent_twemproxy_restarts_total{proxy="sup",result="failed"} 1
redis_consul_agent_twemproxy_restarts_total{proxy="cmd",result="ok"} 5
`
	for _, tc := range []struct {
		metric string
		match  map[string]string
		want   float64
	}{
		{"redis_consul_agent_consul_writes_total", nil, 43},
		{"redis_consul_agent_consul_writes_total", map[string]string{"op": "ttl"}, 40},
		{"redis_consul_agent_twemproxy_restarts_total", map[string]string{"proxy": "sup"}, 3},
		{"redis_consul_agent_twemproxy_restarts_total", map[string]string{"proxy": "none"}, 0},
	} {
		got, err := sumMetric(strings.NewReader(text), tc.metric, tc.match)
		if err != nil || got != tc.want {
			t.Errorf("%s %v: got %v, %v; want %v", tc.metric, tc.match, got, err, tc.want)
		}
	}
}

func TestReadLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.log")
	os.WriteFile(path, []byte(`2026-11-24T19:25:43.181Z [INFO]  redis-consul-agent.twemproxy: config applied: proxy=sup reason=rewrite changes="sup/x 1.2.3.4:1 -> 1.2.3.5:1" restart=12.8ms blackout=12.8ms render="95.061µs" validate_write=50.2ms
2026-11-24T19:25:44.000Z [INFO]  redis-consul-agent.twemproxy: config applied: proxy=cmd reason=rewrite restart=3ms
not a log line
`), 0o644)
	lines := readLog(path, "config applied", "proxy=sup")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1", len(lines))
	}
	l := lines[0]
	if l.msg != "config applied" || l.kv["changes"] != "sup/x 1.2.3.4:1 -> 1.2.3.5:1" || l.kv["render"] != "95.061µs" {
		t.Errorf("parsed %+v", l)
	}
	d := durationsOf(lines, "validate_write", time.Time{})
	if len(d.xs) != 1 || d.xs[0] != 50.2 {
		t.Errorf("validate_write: %v", d.xs)
	}
	if d := durationsOf(lines, "restart", l.at.Add(time.Second)); len(d.xs) != 0 {
		t.Errorf("since filter: %v", d.xs)
	}
}

func TestConsulCounterClassifies(t *testing.T) {
	cc := &consulCounter{lastStatus: map[string]string{}, lastOutput: map[string]string{}, registered: map[string]time.Time{}}
	req := func(method, path, body string) {
		cc.record(httptest.NewRequest(method, path, strings.NewReader(body)))
	}
	req("GET", "/v1/agent/services", "")
	req("PUT", "/v1/agent/service/register", `{"ID":"redis-a","Name":"redis","Check":{"CheckID":"service:redis-a","Status":"passing"}}`)
	req("PUT", "/v1/agent/check/update/service:redis-a", `{"Status":"passing","Output":"set right after the register"}`)
	cc.mu.Lock()
	cc.registered["redis-a"] = time.Now().Add(-time.Hour) // the register is old now
	cc.mu.Unlock()
	req("PUT", "/v1/agent/check/update/service:redis-a", `{"Status":"passing","Output":"set right after the register"}`)
	// A tag change writes the check (a new reason) before it registers.
	req("PUT", "/v1/agent/check/update/service:redis-a", `{"Status":"passing","Output":"a new reason"}`)
	req("PUT", "/v1/agent/check/update/service:redis-a", `{"Status":"critical","Output":"changed"}`)
	req("PUT", "/v1/agent/service/deregister/redis-a", "")
	got := cc.count(time.Time{}, time.Now().Add(time.Second))
	want := map[string]int{reqRead: 1, reqRegister: 1, reqFollowUp: 1, reqRefresh: 1, reqOutput: 1, reqStatus: 1, reqDeregister: 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if n := changes(got); n != 5 {
		t.Errorf("changes: %d, want 5", n)
	}
}

// The baseline rewrites the server named after the master, keeps its
// weight, and loses comments as the old agents did.
func TestBaselineRewrite(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nutcracker.yml")
	os.WriteFile(conf, []byte(`# a comment the old agents drop
main:
  listen: 127.0.0.1:22121
  redis: true
  servers:
    - 127.0.0.1:6379:3 mymaster
    - 127.0.0.1:6400:1 other
`), 0o644)
	marker := filepath.Join(dir, "restarted")
	b := &baseline{config: conf, restart: "touch " + shQuote(marker)}
	if err := b.apply(t.Context(), "mymaster", "127.0.0.2:7000"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(conf)
	for _, want := range []string{"127.0.0.2:7000:3 mymaster", "127.0.0.1:6400:1 other"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(string(got), "comment") {
		t.Errorf("the naive rewrite kept the comment:\n%s", got)
	}
	if _, err := os.Stat(marker); err != nil || b.restarts != 1 {
		t.Errorf("restart command not run: %v, restarts %d", err, b.restarts)
	}
	// An event for a master no pool follows changes nothing.
	if err := b.apply(t.Context(), "unknown", "127.0.0.3:1"); err != nil || b.restarts != 1 {
		t.Errorf("unknown master: err %v, restarts %d", err, b.restarts)
	}
}
