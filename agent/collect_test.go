package agent

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// captureRegisterer keeps what is registered, so that a test can ask every
// collector for its descriptors without values in every vector.
type captureRegisterer struct{ cs []prometheus.Collector }

func (c *captureRegisterer) Register(x prometheus.Collector) error {
	c.cs = append(c.cs, x)
	return nil
}

func (c *captureRegisterer) MustRegister(xs ...prometheus.Collector) { c.cs = append(c.cs, xs...) }
func (c *captureRegisterer) Unregister(prometheus.Collector) bool    { return false }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// seriesNames are the names the collectors describe.
func seriesNames(cs ...prometheus.Collector) map[string]bool {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	out := map[string]bool{}
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// TestCollectorSeries pins the names of the scrape-time series: the alerting
// rules and docs/grafana-dashboard.json use them (and agent/httpapi's
// dashboard test lists them, since it cannot import this package).
func TestCollectorSeries(t *testing.T) {
	got := seriesNames(stateCollector{&Agent{}})
	want := []string{
		"redis_consul_agent_proxy_server_follows",
		"redis_consul_agent_sentinel_master_addr",
		"redis_consul_agent_sentinel_truth_agree",
		"redis_consul_agent_sentinel_truth_known",
		"redis_consul_agent_sentinel_truth_sentinels",
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("collector describes %v, want %v", names, want)
	}
	// An agent without a Monitor or proxies collects nothing, and does not panic.
	ch := make(chan prometheus.Metric, 8)
	stateCollector{&Agent{}}.Collect(ch)
	if len(ch) != 0 {
		t.Errorf("an empty agent collected %d series", len(ch))
	}
}

// TestAlertRulesNameRealSeries: the promtool tests feed the rules series by
// name, so a misspelt name would pass them and never fire in production.
// Every agent series the rules and their tests name must be one the agent
// exports.
func TestAlertRulesNameRealSeries(t *testing.T) {
	reg := &captureRegisterer{}
	telemetry.NewMetrics(reg)
	known := seriesNames(append(reg.cs, stateCollector{&Agent{}})...)
	name := regexp.MustCompile(`\bredis_consul_agent_[a-z_]+\b`)
	for _, f := range []string{"../deploy/prometheus/alerts.yml", "../deploy/prometheus/alerts_test.yml"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range name.FindAllString(string(raw), -1) {
			n++
			if !known[m] {
				t.Errorf("%s: %s is no series of the agent", f, m)
			}
		}
		if n == 0 {
			t.Errorf("%s names no agent series", f)
		}
	}
}
