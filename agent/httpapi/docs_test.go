package httpapi

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// knownSeries is every series name the agent exposes: its collectors (with
// a value in every vector, so each family appears) and the Go and process
// collectors, with the histogram suffixes.
func knownSeries(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := telemetry.NewMetrics(reg)
	m.SetBuild("v", "c")
	m.RedisRole.WithLabelValues("a", "b", "c").Set(1)
	m.CheckStatus.WithLabelValues("a", "b").Set(1)
	m.SentinelUp.WithLabelValues("a").Set(1)
	m.SentinelEvents.WithLabelValues("a").Inc()
	m.Failovers.WithLabelValues("a").Inc()
	m.ConsulWrites.WithLabelValues("a").Inc()
	m.ConsulWriteFailures.WithLabelValues("a").Inc()
	m.Reaction.WithLabelValues("a").Observe(1)
	m.ProxyRestarts.WithLabelValues("a", "b").Inc()
	m.ProxyRollbacks.WithLabelValues("a", "b").Inc()
	m.ProxyRestartDuration.WithLabelValues("a").Observe(1)
	m.ProxyConfigWrites.WithLabelValues("a").Inc()
	m.ProxyPipelineFailures.WithLabelValues("a", "b").Inc()
	m.WritePauseActive.WithLabelValues("a").Set(1)
	m.WritePauses.WithLabelValues("a").Inc()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"up": true}
	// The agent's scrape-time collector (agent/collect.go, which this package
	// cannot import); agent's TestCollectorSeries pins the same names.
	for _, n := range []string{"redis_consul_agent_proxy_server_follows", "redis_consul_agent_sentinel_master_addr",
		"redis_consul_agent_sentinel_truth_agree", "redis_consul_agent_sentinel_truth_known", "redis_consul_agent_sentinel_truth_sentinels"} {
		known[n] = true
	}
	for _, f := range fams {
		known[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[f.GetName()+s] = true
			}
		}
	}
	return known
}

// TestGrafanaDashboard keeps docs/grafana-dashboard.json loadable and in
// step with the metrics: every series a query names must exist.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID         string `json:"uid"`
		Title       string `json:"title"`
		Annotations struct {
			List []struct {
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct {
				X, Y, W, H int
			} `json:"gridPos"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) < 10 {
		t.Fatalf("dashboard uid %q title %q with %d panels", dash.UID, dash.Title, len(dash.Panels))
	}
	known := knownSeries(t)
	nameRe := regexp.MustCompile(`\b(redis_consul_agent_[a-z_]+|go_[a-z_]+|process_[a-z_]+|up)\b\s*[{\[(]`)
	check := func(where, expr string) {
		for _, m := range nameRe.FindAllStringSubmatch(expr, -1) {
			if !known[m[1]] {
				t.Errorf("%s: unknown series %s in %s", where, m[1], expr)
			}
		}
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			queries++
			check("panel "+p.Title, tg.Expr)
		}
	}
	for _, a := range dash.Annotations.List {
		check("annotation", a.Expr)
	}
	for _, v := range dash.Templating.List {
		check("variable "+v.Name, v.Definition)
	}
	if queries < 20 {
		t.Errorf("only %d queries", queries)
	}
	// Each family the agent exports shows on the dashboard somewhere.
	for name := range known {
		if strings.HasPrefix(name, "redis_consul_agent_") && !strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_count") {
			base := strings.TrimSuffix(name, "_bucket")
			if !strings.Contains(string(raw), base) {
				t.Errorf("the dashboard never shows %s", base)
			}
		}
	}
}

// TestPrometheusExample keeps docs/prometheus.yml valid YAML with scrape jobs.
func TestPrometheusExample(t *testing.T) {
	raw, err := os.ReadFile("../../docs/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName     string `yaml:"job_name"`
			MetricsPath string `yaml:"metrics_path"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) == 0 {
		t.Fatal("no scrape_configs")
	}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName == "" || sc.MetricsPath != "/metrics" {
			t.Errorf("scrape config %+v", sc)
		}
	}
}
