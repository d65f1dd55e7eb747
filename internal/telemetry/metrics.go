// Package telemetry holds what every part of the agent reports into: the
// Prometheus collectors, the journal of recent events and failovers, and the
// names of the loggers. It is a leaf package so that discovery and twemproxy
// can record without importing the agent that wires them.
package telemetry

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "redis_consul_agent"

// Metrics are the agent's Prometheus collectors. One value is shared by every
// component of an agent; tests build their own on a private registry.
type Metrics struct {
	// RedisRole is 1 for the role an instance currently has in Consul
	// (master, replica, unknown), 0 for the others.
	RedisRole *prometheus.GaugeVec
	// CheckStatus is 1 for the Consul check status a service currently has.
	CheckStatus *prometheus.GaugeVec
	// SentinelUp is 1 while the agent holds a working link to a Sentinel.
	SentinelUp *prometheus.GaugeVec
	// SentinelEvents counts Sentinel pub/sub messages by channel.
	SentinelEvents *prometheus.CounterVec
	// Failovers counts master changes of the Sentinel truth by master name.
	Failovers *prometheus.CounterVec
	// ConsulWrites and ConsulWriteFailures count agent API writes by
	// operation (register, deregister, ttl).
	ConsulWrites        *prometheus.CounterVec
	ConsulWriteFailures *prometheus.CounterVec
	// Reaction measures the time from a Sentinel event reaching the agent to
	// the change being applied, by target (consul, twemproxy).
	Reaction *prometheus.HistogramVec
	// ProxyRestarts counts twemproxy restarts by proxy and result.
	ProxyRestarts *prometheus.CounterVec
	// ProxyRollbacks counts restored backups by proxy and failed step.
	ProxyRollbacks *prometheus.CounterVec
	// ProxyRestartDuration is stop-to-listening time of a restart.
	ProxyRestartDuration *prometheus.HistogramVec
	// ProxyConfigWrites counts config files written, by proxy.
	ProxyConfigWrites *prometheus.CounterVec
	// ProxyPipelineFailures counts failed pipeline runs by proxy and step.
	ProxyPipelineFailures *prometheus.CounterVec
	// BuildInfo is the usual constant 1 labelled with the build.
	BuildInfo *prometheus.GaugeVec
	// WritePauseActive is 1 while the agent holds a local Redis's writes
	// paused (CLIENT PAUSE WRITE) during a failover of it; WritePauses
	// counts those pauses, by service ID.
	WritePauseActive *prometheus.GaugeVec
	WritePauses      *prometheus.CounterVec
}

// reactionBuckets cover a millisecond-scale reaction up to a slow restart.
var reactionBuckets = []float64{.001, .0025, .005, .01, .015, .02, .03, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RedisRole: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "redis_role",
			Help: "Role of a local Redis instance as registered in Consul (1 for the current role).",
		}, []string{"service_id", "master_name", "role"}),
		CheckStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "consul_check_status",
			Help: "Consul TTL check status of a registered service (1 for the current status).",
		}, []string{"service_id", "status"}),
		SentinelUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sentinel_up",
			Help: "Whether the agent's pub/sub link to a Sentinel is up.",
		}, []string{"sentinel"}),
		SentinelEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sentinel_events_total",
			Help: "Sentinel pub/sub messages received, by channel.",
		}, []string{"type"}),
		Failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "failovers_total",
			Help: "Master changes seen in the Sentinel truth, by master name.",
		}, []string{"master_name"}),
		ConsulWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "consul_writes_total",
			Help: "Writes to the local Consul agent API, by operation.",
		}, []string{"op"}),
		ConsulWriteFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "consul_write_failures_total",
			Help: "Failed writes to the local Consul agent API, by operation.",
		}, []string{"op"}),
		Reaction: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "reaction_seconds",
			Help:    "Time from a Sentinel event reaching the agent to the change being applied, by target.",
			Buckets: reactionBuckets,
		}, []string{"target"}),
		ProxyRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "twemproxy_restarts_total",
			Help: "twemproxy restarts, by proxy and result.",
		}, []string{"proxy", "result"}),
		ProxyRollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "twemproxy_rollbacks_total",
			Help: "Restores of the last good twemproxy config, by proxy and failed step.",
		}, []string{"proxy", "step"}),
		ProxyRestartDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "twemproxy_restart_duration_seconds",
			Help:    "Time from stopping twemproxy to every pool answering again.",
			Buckets: reactionBuckets,
		}, []string{"proxy"}),
		ProxyConfigWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "twemproxy_config_writes_total",
			Help: "twemproxy config files written, by proxy.",
		}, []string{"proxy"}),
		ProxyPipelineFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "twemproxy_pipeline_failures_total",
			Help: "Failed twemproxy pipeline runs, by proxy and failed step.",
		}, []string{"proxy", "step"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "build_info",
			Help: "Build of the running agent; always 1.",
		}, []string{"version", "commit", "goversion"}),
		WritePauseActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "write_pause_active",
			Help: "1 while the agent keeps a local Redis from acknowledging writes (CLIENT PAUSE WRITE) because Sentinel is failing it over.",
		}, []string{"service_id"}),
		WritePauses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "write_pauses_total",
			Help: "Write pauses the agent put on a local Redis during a failover of it.",
		}, []string{"service_id"}),
	}
	reg.MustRegister(m.RedisRole, m.CheckStatus, m.SentinelUp, m.SentinelEvents,
		m.Failovers, m.ConsulWrites, m.ConsulWriteFailures, m.Reaction,
		m.ProxyRestarts, m.ProxyRollbacks, m.ProxyRestartDuration,
		m.ProxyConfigWrites, m.ProxyPipelineFailures, m.BuildInfo,
		m.WritePauseActive, m.WritePauses)
	return m
}

// SetBuild records the running build.
func (m *Metrics) SetBuild(version, commit string) {
	m.BuildInfo.WithLabelValues(version, commit, runtime.Version()).Set(1)
}

// SetOneOf sets the series of vec labelled with prefix+current to 1 and the
// other choices to 0, so a state gauge always has exactly one series at 1.
func SetOneOf(vec *prometheus.GaugeVec, prefix []string, current string, choices ...string) {
	for _, c := range choices {
		v := 0.0
		if c == current {
			v = 1
		}
		vec.WithLabelValues(append(append([]string(nil), prefix...), c)...).Set(v)
	}
}

// Discard returns metrics registered on a private registry nobody scrapes:
// for a command that records but exposes nothing (render) and for tests.
// A component is given its metrics explicitly; none falls back to these.
func Discard() *Metrics { return NewMetrics(prometheus.NewRegistry()) }

// Pipeline steps and restart results, the label values the twemproxy
// runner reports.
var (
	ProxySteps          = []string{"render", "validate", "write", "restart", "probe"}
	ProxyRestartResults = []string{"ok", "failed"}
	ConsulOps           = []string{"register", "deregister", "ttl"}
)

// Prime creates every labelled series the agent will use at 0, so that a
// scrape shows them before the first event (a rate() over a series that
// appears only at the first failover misses that failover).
func (m *Metrics) Prime(channels, masterNames, proxies []string) {
	for _, c := range channels {
		m.SentinelEvents.WithLabelValues(c)
	}
	for _, n := range masterNames {
		m.Failovers.WithLabelValues(n)
	}
	for _, op := range ConsulOps {
		m.ConsulWrites.WithLabelValues(op)
		m.ConsulWriteFailures.WithLabelValues(op)
	}
	for _, t := range []string{"consul", "twemproxy"} {
		m.Reaction.WithLabelValues(t)
	}
	for _, p := range proxies {
		for _, s := range ProxySteps {
			m.ProxyRollbacks.WithLabelValues(p, s)
			m.ProxyPipelineFailures.WithLabelValues(p, s)
		}
		for _, r := range ProxyRestartResults {
			m.ProxyRestarts.WithLabelValues(p, r)
		}
		m.ProxyRestartDuration.WithLabelValues(p)
		m.ProxyConfigWrites.WithLabelValues(p)
	}
}
