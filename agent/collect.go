package agent

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed42ef8afe/redis-consul-agent/haproxy"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// stateCollector exports, at scrape time, what the running agent already
// knows about the cluster and no counter or event gauge says: what each
// Sentinel reports, whether the agent holds a Sentinel truth it may act on,
// and whether every managed proxy server points at that truth. The alerting
// rules in deploy/prometheus/alerts.yml need these series (Sentinels
// disagreeing, a proxy not following). It reads snapshots only (the
// Monitor's and the runners' Status); a scrape does no I/O.
type stateCollector struct{ a *Agent }

var (
	sentinelMasterDesc = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, "", "sentinel_master_addr"),
		"1 for the master address a reachable Sentinel reported for a master name at the agent's last poll. "+
			"Sentinels disagree when one master name has more than one address.",
		[]string{"sentinel", "master_name", "addr"}, nil)
	truthKnownDesc = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, "", "sentinel_truth_known"),
		"1 while the agent holds a Sentinel truth it acts on for a master name (a majority or a confirmed +switch-master), "+
			"0 while it only keeps the last known address (no majority, no fresh event).",
		[]string{"master_name"}, nil)
	truthAgreeDesc = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, "", "sentinel_truth_agree"),
		"How many Sentinels report the address the agent holds as the master.",
		[]string{"master_name"}, nil)
	truthTotalDesc = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, "", "sentinel_truth_sentinels"),
		"How many Sentinels the agent knows for a master name's truth (reachable or not).",
		[]string{"master_name"}, nil)
	proxyFollowsDesc = prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, "", "proxy_server_follows"),
		"1 while a proxy server that follows a Sentinel master name points at the master the agent holds "+
			"(and the running proxy has loaded that config), 0 while it points elsewhere.",
		[]string{"kind", "proxy", "pool", "server"}, nil)
)

// metricsNamespace is the prefix every series of the agent shares.
const metricsNamespace = "redis_consul_agent"

// Describe implements prometheus.Collector.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sentinelMasterDesc, truthKnownDesc, truthAgreeDesc, truthTotalDesc, proxyFollowsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A series is sent once: a
// duplicate (one Sentinel listed under two spellings of its address, a
// server name twice in a pool) would make the whole scrape fail.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	emit := func(d *prometheus.Desc, v float64, labels ...string) {
		key := d.String() + "\x00" + strings.Join(labels, "\x00")
		if seen[key] {
			return
		}
		seen[key] = true
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if m := c.a.monitor; m != nil {
		for _, s := range m.Status() {
			if !s.Reachable {
				continue // its View is empty: it says nothing, which is no disagreement
			}
			for name, addr := range s.View {
				if addr != "" {
					emit(sentinelMasterDesc, 1, s.Addr, name, addr)
				}
			}
		}
		for name, t := range m.Masters() {
			known := 0.0
			if t.Known() {
				known = 1
			}
			emit(truthKnownDesc, known, name)
			emit(truthAgreeDesc, float64(t.Agree), name)
			emit(truthTotalDesc, float64(t.Total), name)
		}
	}
	for _, v := range c.a.proxies.values() {
		r, ok := v.(*twemproxy.Runner)
		if !ok {
			continue
		}
		st := r.Status()
		// A file that matches does not help while nutcracker still runs
		// the previous one (a restart pending or failed).
		loaded := st.RunningSHA256 == "" || st.RunningSHA256 == st.ConfigSHA256
		for _, p := range st.Pools {
			for _, s := range p.Servers {
				if s.Truth == "" || s.Name == "" {
					continue // not a server that follows a master name
				}
				follows := 0.0
				if s.Matches && loaded {
					follows = 1
				}
				emit(proxyFollowsDesc, follows, "twemproxy", st.Name, p.Name, s.Name)
			}
		}
	}
	c.collectHAProxy(emit)
}

// collectHAProxy feeds proxy_server_follows from the HAProxy drivers:
// kind "haproxy", pool the backend, server the server. A server HAProxy
// lacks does not follow; while the runtime API does not answer none
// counts as following, since the driver could not move one. A master name
// with no truth yet gives no series, as for twemproxy.
func (c stateCollector) collectHAProxy(emit func(*prometheus.Desc, float64, ...string)) {
	for _, v := range c.a.haproxies.values() {
		d, ok := v.(*haproxy.Driver)
		if !ok {
			continue
		}
		st := d.Status()
		for _, s := range st.Servers {
			if s.Truth == "" {
				continue
			}
			follows := 0.0
			if s.Matches && st.Reachable {
				follows = 1
			}
			emit(proxyFollowsDesc, follows, "haproxy", st.Name, s.Server.Backend, s.Server.Server)
		}
	}
}
