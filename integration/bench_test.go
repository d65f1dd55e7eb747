package integration

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/bench"
)

// TestBenchShort runs the short version of the benchmark (`redis-consul-agent
// bench --short`) against the real components so that it keeps working. It
// checks that every figure was measured and is sane; it asserts no timing:
// the benchmark reports, it does not fail a slow machine.
func TestBenchShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and agents")
	}
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := bench.Run(ctx, bench.Options{Agent: bin, Short: true, Progress: testWriter{t}, Command: "TestBenchShort"})
	if rep != nil {
		var b strings.Builder
		rep.WriteTable(&b)
		t.Logf("short benchmark, %s:\n%s", time.Since(start).Round(time.Second), b.String())
	}
	if err != nil {
		t.Fatalf("bench: %v", err)
	}

	// Every figure has rows, and each row that measured something holds
	// finite, ordered, non-negative values.
	figures := map[string]int{}
	for _, r := range rep.Rows {
		figures[r.Figure[:1]]++
		if r.N == 0 {
			continue
		}
		for _, v := range []float64{r.P50, r.P95, r.Min, r.Max} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Errorf("%s %q: value %v", r.Figure, r.What, v)
			}
		}
		if !(r.Min <= r.P50 && r.P50 <= r.P95 && r.P95 <= r.Max) {
			t.Errorf("%s %q: min %v p50 %v p95 %v max %v out of order", r.Figure, r.What, r.Min, r.P50, r.P95, r.Max)
		}
	}
	for _, f := range []string{"1", "2", "3", "4", "5", "6", "7", "8"} {
		if figures[f] == 0 {
			t.Errorf("figure %s: no rows", f)
		}
	}
	// The headline rows measured at least one run each, with a positive
	// value where zero is impossible.
	must := map[string]string{
		"1a": "Consul DNS answers only the new master",
		"1b": "agent, supervise",
		"2a": "first write via twemproxy",
		"2b": "master.redis.service.consul",
		"6":  "Consul writes per failover",
		"7":  "first write on the new master, agent-driven",
		"8a": "first write via twemproxy",
		"8b": "first write via master.redis-hx",
	}
	for fig, what := range must {
		r, ok := findRow(rep, fig, what)
		if !ok {
			t.Errorf("figure %s: no row %q", fig, what)
			continue
		}
		if r.N == 0 || r.P50 <= 0 {
			t.Errorf("figure %s %q: n=%d p50=%v, want a positive measurement", fig, what, r.N, r.P50)
		}
	}
	for _, what := range []string{"natural: restarts the agent took per burst", "natural: first +switch-master → every pool", "seen at once: resume → every pool"} {
		if r, ok := findRow(rep, "4", what); !ok || r.N == 0 {
			t.Errorf("figure 4: %q not measured", what)
		}
	}
	// A restart's blackout can fall between two probes of a loaded machine:
	// some restarts must have been measured, not every one.
	blackouts := 0
	for _, r := range rep.Rows {
		if r.Figure == "3" {
			blackouts += r.N
		}
	}
	if blackouts == 0 {
		t.Errorf("figure 3: no blackout measured")
	}
	// The lost-write rows counted every run (zero is a measurement here).
	for _, c := range []struct{ fig, what string }{{"7", "lost once the old master returns"}, {"8c", "lost via twemproxy"}, {"8d", "lost via twemproxy"}} {
		if r, ok := findRow(rep, c.fig, c.what); !ok || r.N == 0 {
			t.Errorf("figure %s: %q not counted", c.fig, c.what)
		}
	}
	if r, ok := findRow(rep, "5", "RSS"); !ok || r.N == 0 || r.P50 <= 0 {
		t.Errorf("figure 5: no RSS measured")
	}
}

func findRow(rep *bench.Report, fig, what string) (bench.Row, bool) {
	for _, r := range rep.Rows {
		if r.Figure == fig && strings.Contains(r.What, what) {
			return r, true
		}
	}
	return bench.Row{}, false
}

// testWriter sends the benchmark's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
