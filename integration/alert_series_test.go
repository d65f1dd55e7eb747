package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
)

// TestAlertSeries checks the series the alerting rules of
// deploy/prometheus/alerts.yml read from the agent's scrape-time collector
// (agent/collect.go) against real Sentinels and twemproxy: every Sentinel's
// view, the truth the agent holds, whether the pool's server follows it; then
// one Sentinel is made to monitor a replica under the master's name, and the
// series must show the Sentinels disagreeing (RedisSentinelsDisagree's input)
// while the truth, backed by the other two, stays known.
func TestAlertSeries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := startOpsStack(t, ctx)
	name, master := st.shard.Name, st.shard.Master.Addr()
	replica := st.shard.Replicas[0].Addr()

	// views are the sentinel → address series of the master name.
	views := func(fams map[string]*dto.MetricFamily) map[string]string {
		out := map[string]string{}
		for _, m := range fams["redis_consul_agent_sentinel_master_addr"].GetMetric() {
			l := labelMap(m)
			if l["master_name"] == name && m.GetGauge().GetValue() == 1 {
				out[l["sentinel"]] = l["addr"]
			}
		}
		return out
	}
	gauge := func(fams map[string]*dto.MetricFamily, family string, labels map[string]string) string {
		v, ok := metricValue(fams, family, labels)
		if !ok {
			return "absent"
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	if err := opsPoll(ctx, "the collector's series in the steady state", func(ctx context.Context) error {
		fams, err := scrapeQuiet(ctx, st.url+"/metrics")
		if err != nil {
			return err
		}
		v := views(fams)
		if len(v) != 3 {
			return fmt.Errorf("sentinel views %v, want 3", v)
		}
		for s, a := range v {
			if a != master {
				return fmt.Errorf("sentinel %s reports %s, want %s", s, a, master)
			}
		}
		for _, c := range []struct{ family, want string }{
			{"redis_consul_agent_sentinel_truth_known", "1"},
			{"redis_consul_agent_sentinel_truth_agree", "3"},
			{"redis_consul_agent_sentinel_truth_sentinels", "3"},
		} {
			if got := gauge(fams, c.family, map[string]string{"master_name": name}); got != c.want {
				return fmt.Errorf("%s = %s, want %s", c.family, got, c.want)
			}
		}
		follows := map[string]string{"kind": "twemproxy", "proxy": "main", "pool": "shop", "server": name}
		if got := gauge(fams, "redis_consul_agent_proxy_server_follows", follows); got != "1" {
			return fmt.Errorf("proxy_server_follows = %s, want 1", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	odd := st.shard.Sentinels[2].Addr()
	t.Logf("sentinel %s now monitors replica %s as %s", odd, replica, name)
	sc := redis.NewSentinelClient(&redis.Options{Addr: odd, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer sc.Close()
	remonitor := func(ctx context.Context, addr string) error {
		host, port, _ := net.SplitHostPort(addr)
		if err := sc.Remove(ctx, name).Err(); err != nil {
			return fmt.Errorf("SENTINEL REMOVE %s on %s: %w", name, odd, err)
		}
		if err := sc.Monitor(ctx, name, host, port, "2").Err(); err != nil {
			return fmt.Errorf("SENTINEL MONITOR %s %s on %s: %w", name, addr, odd, err)
		}
		return nil
	}
	if err := remonitor(ctx, replica); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := remonitor(context.Background(), master); err != nil {
			t.Errorf("restoring sentinel %s: %v", odd, err)
		}
	}()
	if err := opsPoll(ctx, "the collector's series to show the Sentinels disagreeing", func(ctx context.Context) error {
		fams, err := scrapeQuiet(ctx, st.url+"/metrics")
		if err != nil {
			return err
		}
		v := views(fams)
		distinct := map[string]bool{}
		for _, a := range v {
			distinct[a] = true
		}
		if len(distinct) != 2 || !distinct[master] || !distinct[replica] {
			return fmt.Errorf("sentinel views %v, want %s and %s", v, master, replica)
		}
		if got := gauge(fams, "redis_consul_agent_sentinel_truth_known", map[string]string{"master_name": name}); got != "1" {
			return fmt.Errorf("truth_known = %s, want 1 (two Sentinels of three still agree)", got)
		}
		if got := gauge(fams, "redis_consul_agent_sentinel_truth_agree", map[string]string{"master_name": name}); got != "2" {
			return fmt.Errorf("truth_agree = %s, want 2", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// scrapeQuiet fetches and parses /metrics without failing the test, for use
// inside a poll.
func scrapeQuiet(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	body, err := opsGet(ctx, url)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(bytes.NewReader(body))
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
