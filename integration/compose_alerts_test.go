package integration

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Prometheus of the Docker stack evaluates deploy/prometheus/alerts.yml;
// these checks read it through its HTTP API on the published port.

// promAlert is one entry of Prometheus's /api/v1/alerts.
type promAlert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"` // pending or firing; resolved alerts are not listed
	ActiveAt time.Time         `json:"activeAt"`
}

func (s *composeStack) promURL(path string) string {
	return "http://127.0.0.1:" + s.ports.prometheus + path
}

// alerts returns the pending and firing alerts of the stack's Prometheus.
func (s *composeStack) alerts(ctx context.Context) ([]promAlert, error) {
	var resp struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := s.getJSON(ctx, s.promURL("/api/v1/alerts"), &resp); err != nil {
		return nil, err
	}
	return resp.Data.Alerts, nil
}

// promQuery runs an instant query and returns each result's labels and value.
func (s *composeStack) promQuery(ctx context.Context, q string) ([]map[string]string, []string, error) {
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := s.getJSON(ctx, s.promURL("/api/v1/query?"+url.Values{"query": {q}}.Encode()), &resp); err != nil {
		return nil, nil, err
	}
	var labels []map[string]string
	var values []string
	for _, r := range resp.Data.Result {
		labels = append(labels, r.Metric)
		values = append(values, fmt.Sprint(r.Value[1]))
	}
	return labels, values, nil
}

func describeAlerts(as []promAlert) string {
	var out []string
	for _, a := range as {
		out = append(out, fmt.Sprintf("%s %v %s, active since %s", a.Labels["alertname"], a.Labels, a.State, a.ActiveAt.Format("15:04:05")))
	}
	if len(out) == 0 {
		return "no alerts"
	}
	return strings.Join(out, "; ")
}

// checkPrometheus: Prometheus scrapes every agent of the stack, and the
// series the alerting rules need are there.
func (s *composeStack) checkPrometheus(ctx context.Context, t *testing.T) {
	agents := 0
	for name := range composeHosts {
		if name != "consul" && name != "prometheus" {
			agents++
		}
	}
	waitFor(ctx, t, 60*time.Second, "Prometheus scrapes every agent", func(ctx context.Context) (bool, string) {
		var resp struct {
			Data struct {
				ActiveTargets []struct {
					ScrapeURL string `json:"scrapeUrl"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := s.getJSON(ctx, s.promURL("/api/v1/targets?state=active"), &resp); err != nil {
			return false, err.Error()
		}
		var bad []string
		for _, tg := range resp.Data.ActiveTargets {
			if tg.Health != "up" {
				bad = append(bad, fmt.Sprintf("%s %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
			}
		}
		// Every agent, and HAProxy's own exporter (job haproxy).
		if len(resp.Data.ActiveTargets) != agents+1 || len(bad) > 0 {
			return false, fmt.Sprintf("%d targets, want %d up; not up: %v", len(resp.Data.ActiveTargets), agents+1, bad)
		}
		return true, ""
	})
	// The collector's series (agent/collect.go): every Sentinel's view as
	// each agent sees it, and the twemproxy servers following Sentinel.
	waitFor(ctx, t, 30*time.Second, "the rules' input series are scraped", func(ctx context.Context) (bool, string) {
		// Each query filters: it returns one result when the check holds.
		for _, q := range []string{
			`count(count by (sentinel) (redis_consul_agent_sentinel_master_addr{master_name="shard-a"})) >= 3`,
			`min(redis_consul_agent_sentinel_truth_known) == 1`,
			`sum(redis_consul_agent_proxy_server_follows{kind="twemproxy",pool="demo"}) == 2`,
			`count(redis_consul_agent_redis_role{role="master"} == 1) == 2`,
		} {
			if _, vals, err := s.promQuery(ctx, q); err != nil || len(vals) != 1 {
				return false, fmt.Sprintf("%s: %v %v", q, vals, err)
			}
		}
		return true, ""
	})
}

// checkNoMasterAlert partitions a shard's master that Sentinel cannot
// replace (its replicas have replica-priority 0), so that the shard has no
// master for longer than RedisShardNoMaster's `for`: the alert must fire,
// and resolve once the partition heals and the master is tagged again. It
// first checks that the failovers of the earlier subtests, each done within
// seconds, fired no alert at all.
func (s *composeStack) checkNoMasterAlert(ctx context.Context, t *testing.T, shard string) {
	fired, samples, err := s.promQuery(ctx, `count by (alertname) (count_over_time(ALERTS{alertstate="firing"}[30m]))`)
	if err != nil {
		t.Fatalf("query the alerts' history: %v", err)
	}
	if len(fired) > 0 {
		t.Errorf("alerts fired during the stack's start and its failovers: %v (evaluations firing: %v)", fired, samples)
	}

	old, views := s.sentinelTruth(ctx, shard)
	if old == "" {
		t.Fatalf("no Sentinel majority for %s: %s", shard, views)
	}
	oldHost := s.host(old)
	var replicas []string
	for name := range composeHosts {
		if strings.HasPrefix(name, "redis-"+strings.TrimPrefix(shard, "shard-")) && name != oldHost {
			replicas = append(replicas, net.JoinHostPort(s.ip(name), "6379"))
		}
	}
	slices.Sort(replicas)
	if len(replicas) != 2 {
		t.Fatalf("replicas of %s: %v", shard, replicas)
	}
	setPriority := func(ctx context.Context, prio string) error {
		for _, r := range replicas {
			c := redis.NewClient(&redis.Options{Addr: r, DialTimeout: time.Second, ReadTimeout: time.Second})
			err := c.ConfigSet(ctx, "replica-priority", prio).Err()
			_ = c.Close()
			if err != nil {
				return fmt.Errorf("CONFIG SET replica-priority %s on %s: %w", prio, r, err)
			}
		}
		return nil
	}
	if err := setPriority(ctx, "0"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := setPriority(context.Background(), "100"); err != nil {
			t.Errorf("restoring the replicas: %v", err)
		}
	}()
	// Sentinel reads a replica's priority from its INFO, every 10s.
	waitFor(ctx, t, 30*time.Second, "every Sentinel sees the replicas as not promotable", func(ctx context.Context) (bool, string) {
		return s.sentinelsSeePriority(ctx, shard, replicas, "0")
	})

	t.Logf("disconnecting rca-%s, master of %s at %s, which Sentinel cannot replace", oldHost, shard, old)
	cut := time.Now()
	if _, err := s.docker(ctx, "network", "disconnect", "redis-demo", "rca-"+oldHost); err != nil {
		t.Fatal(err)
	}
	reconnected := false
	reconnect := func() {
		if reconnected {
			return
		}
		reconnected = true
		if _, err := s.docker(context.Background(), "network", "connect", "--ip", s.ip(oldHost), "--alias", oldHost, "redis-demo", "rca-"+oldHost); err != nil {
			t.Errorf("reconnecting: %v", err)
		}
	}
	defer reconnect()

	var firing []promAlert
	waitFor(ctx, t, 150*time.Second, "RedisShardNoMaster fires for "+shard, func(ctx context.Context) (bool, string) {
		as, err := s.alerts(ctx)
		if err != nil {
			return false, err.Error()
		}
		firing = as
		for _, a := range as {
			if a.Labels["alertname"] == "RedisShardNoMaster" && a.Labels["master_name"] == shard && a.State == "firing" {
				return true, ""
			}
		}
		return false, describeAlerts(as)
	})
	t.Logf("RedisShardNoMaster fired %s after the cut; alerts then: %s", time.Since(cut).Round(time.Second), describeAlerts(firing))
	for _, a := range firing {
		if a.Labels["alertname"] == "RedisShardNoMaster" && a.Labels["master_name"] != shard && a.State == "firing" {
			t.Errorf("RedisShardNoMaster fires for a shard that has its master: %v", a.Labels)
		}
	}
	if got, err := s.lookup(ctx, shard+"-master.redis.service.consul"); err != nil || len(got) != 0 {
		t.Errorf("while the alert fires, DNS %s-master answers %v (%v), want nothing", shard, got, err)
	}
	if a, v := s.sentinelTruth(ctx, shard); a != old {
		t.Errorf("Sentinel failed over although no replica may be promoted: %s", v)
	}

	t.Logf("reconnecting rca-%s", oldHost)
	reconnect()
	back := time.Now()
	waitFor(ctx, t, 60*time.Second, "the master is back in DNS, Consul, twemproxy and the dashboard", func(ctx context.Context) (bool, string) {
		return s.shardConsistent(ctx, shard, old)
	})
	waitFor(ctx, t, 60*time.Second, "RedisShardNoMaster resolves", func(ctx context.Context) (bool, string) {
		as, err := s.alerts(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, a := range as {
			if a.Labels["alertname"] == "RedisShardNoMaster" {
				return false, describeAlerts(as)
			}
		}
		return true, ""
	})
	t.Logf("RedisShardNoMaster resolved %s after reconnecting", time.Since(back).Round(time.Second))
}

// sentinelsSeePriority reports whether every Sentinel lists each replica
// with the given slave-priority.
func (s *composeStack) sentinelsSeePriority(ctx context.Context, shard string, replicas []string, prio string) (bool, string) {
	for _, name := range []string{"sentinel-1", "sentinel-2", "sentinel-3"} {
		c := redis.NewSentinelClient(&redis.Options{Addr: net.JoinHostPort(s.ip(name), "26379"), DialTimeout: time.Second, ReadTimeout: time.Second})
		list, err := c.Replicas(ctx, shard).Result()
		_ = c.Close()
		if err != nil {
			return false, fmt.Sprintf("%s: SENTINEL REPLICAS %s: %v", name, shard, err)
		}
		seen := map[string]string{}
		for _, r := range list {
			seen[net.JoinHostPort(r["ip"], r["port"])] = r["slave-priority"]
		}
		for _, r := range replicas {
			if seen[r] != prio {
				return false, fmt.Sprintf("%s: replica %s has slave-priority %q", name, r, seen[r])
			}
		}
	}
	return true, ""
}
