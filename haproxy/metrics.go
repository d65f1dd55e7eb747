package haproxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

const namespace = "redis_consul_agent"

// Metrics are the HAProxy driver's Prometheus collectors, declared here
// beside the code that records them. One value serves every Driver of an
// agent; each series carries the haproxy entry's name.
type Metrics struct {
	// Up is 1 while the runtime API answered the last command.
	Up *prometheus.GaugeVec
	// Commands counts runtime API commands by verb and result (ok, refused,
	// error: the API did not answer).
	Commands *prometheus.CounterVec
	// Moves counts servers moved to a new master address.
	Moves *prometheus.CounterVec
	// Reconciles counts reads of `show servers state` followed by the
	// needed commands, by reason (start, truth, tick, retry) and result.
	Reconciles *prometheus.CounterVec
	// Mismatched is how many managed servers do not match the truth now.
	Mismatched *prometheus.GaugeVec
	// Reaction is the time from the agent learning a new master to
	// HAProxy's server pointing at it.
	Reaction *prometheus.HistogramVec
	// CheckStatus is 1 for the Consul check status a frontend has now.
	CheckStatus *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them on reg. Give
// prometheus.NewRegistry() where nothing scrapes them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "haproxy_up",
			Help: "1 while the HAProxy runtime API answered the last command.",
		}, []string{"haproxy"}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "haproxy_commands_total",
			Help: "HAProxy runtime API commands by verb and result (ok, refused, error).",
		}, []string{"haproxy", "command", "result"}),
		Moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "haproxy_server_moves_total",
			Help: "HAProxy servers moved to a new master address.",
		}, []string{"haproxy", "backend", "server"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "haproxy_reconciles_total",
			Help: "Reconciliations of HAProxy's servers with the Sentinel truth, by reason and result.",
		}, []string{"haproxy", "reason", "result"}),
		Mismatched: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "haproxy_servers_mismatched",
			Help: "Managed HAProxy servers that do not point at the Sentinel truth now.",
		}, []string{"haproxy"}),
		Reaction: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "haproxy_reaction_seconds",
			Help:    "Time from the agent learning a new master to HAProxy's server pointing at it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"haproxy"}),
		CheckStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "haproxy_check_status",
			Help: "Consul check status of a managed HAProxy frontend (1 for the current status).",
		}, []string{"service_id", "status"}),
	}
	reg.MustRegister(m.Up, m.Commands, m.Moves, m.Reconciles, m.Mismatched, m.Reaction, m.CheckStatus)
	return m
}

func (m *Metrics) setCheck(id, status string) {
	for _, s := range []string{consulreg.Passing, consulreg.Warning, consulreg.Critical} {
		v := 0.0
		if s == status {
			v = 1
		}
		m.CheckStatus.WithLabelValues(id, s).Set(v)
	}
}

func (m *Metrics) deleteCheck(id string) {
	for _, s := range []string{consulreg.Passing, consulreg.Warning, consulreg.Critical} {
		m.CheckStatus.DeleteLabelValues(id, s)
	}
}
