// Package status defines the JSON the agent serves at /v1/status and
// /v1/cluster, and that `redis-consul-agent status` and the dashboard read.
// It is the one wire contract of the agent: it holds types only, and the
// only JSON tags in the product are here. Domain types (discovery,
// twemproxy, telemetry) carry none; the agent maps them to these types in
// one place (agent/statusmap.go), so a field renamed in a runner cannot
// silently change what scripts read.
package status

import "time"

// Snapshot is what this agent knows and does, at /v1/status.
type Snapshot struct {
	Node      string    `json:"node"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	Now       time.Time `json:"now"`
	// Instances are the local Redis instances this agent registers.
	Instances []Instance `json:"instances"`
	// LocalSentinels are the local Sentinels this agent registers.
	LocalSentinels []LocalSentinel `json:"local_sentinels"`
	// Sentinels are the Sentinels this agent follows, with their views.
	Sentinels []Sentinel `json:"sentinels"`
	// Masters is the Sentinel truth per master name.
	Masters []Master `json:"masters"`
	// Proxies are the local twemproxy instances this agent manages.
	Proxies []Proxy `json:"proxies"`
	// Consul is how this agent's own registrations stand in Consul.
	Consul *Consul `json:"consul,omitempty"`
	// Events are this agent's recent events, oldest first.
	Events []Event `json:"events"`
	// Failovers are the failovers this agent learnt of, oldest first.
	Failovers []Failover `json:"failovers"`
	// HAProxy are the local HAProxy instances this agent drives.
	HAProxy []HAProxyStatus `json:"haproxy"`
}

// Event is one line of the agent's journal.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`             // sentinel, truth, consul, twemproxy, agent
	Type    string    `json:"type"`             // e.g. +switch-master, register, restart
	Subject string    `json:"subject"`          // master name, service ID or proxy name
	Detail  string    `json:"detail,omitempty"` // human text
	Level   string    `json:"level,omitempty"`  // info, warn, error
}

// Failover is one change of master for a master name, with the time each
// target applied it on this agent. Zero times mean not (yet) applied here.
type Failover struct {
	Master      string    `json:"master"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	At          time.Time `json:"at"` // when the agent learnt of it
	ConsulAt    time.Time `json:"consul_at,omitzero"`
	TwemproxyAt time.Time `json:"twemproxy_at,omitzero"`
	HAProxyAt   time.Time `json:"haproxy_at,omitzero"` // a HAProxy server moved
}

// Consul says whether Consul holds what this agent registers, and the last
// error it answered: what an operator checks first when DNS looks wrong.
type Consul struct {
	Services   int `json:"services"`   // services this agent registers (Redis, Sentinels, pools)
	Registered int `json:"registered"` // of which Consul holds the definition and status
	// Unregistered are the IDs of the others: being retried with backoff.
	Unregistered []string `json:"unregistered,omitempty"`
	// LastError is the latest error of a Consul write, kept after the
	// write recovered; LastErrorAt says when and LastErrorService for which.
	LastError        string    `json:"last_error,omitempty"`
	LastErrorAt      time.Time `json:"last_error_at,omitzero"`
	LastErrorService string    `json:"last_error_service,omitempty"`
}

// Instance is one local Redis as registered in Consul.
type Instance struct {
	ServiceID  string    `json:"service_id"`
	Service    string    `json:"service"`
	Address    string    `json:"address"`
	Announce   string    `json:"announce"`
	MasterName string    `json:"master_name"`
	Role       string    `json:"role"`   // master, replica, unknown
	Status     string    `json:"status"` // passing, warning, critical
	Why        string    `json:"why"`    // the check output
	Since      time.Time `json:"since,omitzero"`
	// WritePause is set while the agent keeps this Redis from
	// acknowledging writes during a failover of it (CLIENT PAUSE WRITE).
	WritePause *WritePause `json:"write_pause,omitempty"`
}

// WritePause is a write pause the agent holds on a local Redis.
type WritePause struct {
	Since time.Time `json:"since"`
	Why   string    `json:"why"`
}

// LocalSentinel is one local Sentinel registered as redis-sentinel.
type LocalSentinel struct {
	ServiceID string   `json:"service_id"`
	Address   string   `json:"address"`
	Masters   []string `json:"masters"`
	Status    string   `json:"status"`
	Why       string   `json:"why"`
}

// Sentinel is one Sentinel this agent talks to.
type Sentinel struct {
	Address   string            `json:"address"`
	Up        bool              `json:"up"`
	LastError string            `json:"last_error,omitempty"`
	View      map[string]string `json:"view"` // master name -> host:port
}

// Master is the Sentinel truth for one master name.
type Master struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Source string `json:"source"` // majority, switch-master or stale, as discovery names them
	// Agree of Total Sentinels name Addr. Total counts every Sentinel this
	// agent knows of, reachable or not (one Sentinel counted once).
	Agree int       `json:"agree"`
	Total int       `json:"total"`
	Since time.Time `json:"since"`
}

// Proxy is one local twemproxy.
type Proxy struct {
	Name        string        `json:"name"`
	ConfigFile  string        `json:"config_file"`
	ConfigHash  string        `json:"config_hash"`
	Mode        string        `json:"mode"`
	Pools       []Pool        `json:"pools"`
	LastRestart *Restart      `json:"last_restart,omitempty"`
	Restarts    int           `json:"restarts"`
	Rollbacks   int           `json:"rollbacks"`
	LastError   string        `json:"last_error,omitempty"`
	Blackout    time.Duration `json:"last_blackout_ns"`
	// FailedRuns counts the failed rewrites since the last that succeeded.
	FailedRuns int `json:"failed_runs"`
	// WrongSince is when the truth moved a server this proxy still uses
	// (a failed rewrite); WrongFor how long that is at the snapshot.
	WrongSince time.Time     `json:"wrong_since,omitzero"`
	WrongFor   time.Duration `json:"wrong_for_ns,omitempty"`
}

// Pool is one twemproxy pool.
type Pool struct {
	Name      string   `json:"name"`
	Listen    string   `json:"listen"`
	ServiceID string   `json:"service_id"`
	Status    string   `json:"status"`
	Why       string   `json:"why"`
	Servers   []Server `json:"servers"`
	// WrongSince is when the agent learnt the earliest master address the
	// pool does not use yet; zero while every server matches.
	WrongSince time.Time `json:"wrong_since,omitzero"`
}

// Server is one server line of a pool.
type Server struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Weight int    `json:"weight"`
	Want   string `json:"want,omitempty"` // the Sentinel truth when it differs
	// Follows is true when the server is named after a master the
	// Sentinels report, so the agent keeps it on that master. Matches is
	// false only for such a server that is elsewhere now; a server that
	// does not follow Sentinel always "matches", as nothing says otherwise.
	Follows bool `json:"follows"`
	Matches bool `json:"matches"`
}

// Restart is one restart of a proxy.
type Restart struct {
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration_ns"`
	Result   string        `json:"result"` // ok, rolled-back, failed
	Reason   string        `json:"reason,omitempty"`
}

// Cluster is the whole cluster as Consul sees it, at /v1/cluster: what the
// dashboard shows, so that any agent's dashboard tells the same story.
type Cluster struct {
	UpdatedAt time.Time         `json:"updated_at"`
	Shards    []Shard           `json:"shards"`
	Sentinels []ClusterSentinel `json:"sentinels"`
	Proxies   []ClusterProxy    `json:"proxies"`
	// Failovers are the recent failovers, each told once, merged from this
	// agent and every peer that answered; oldest first.
	Failovers []ClusterFailover `json:"failovers"`
	// Peers are the other agents (the redis-consul-agent services) whose
	// stories Failovers merges; one that did not answer has Error set.
	Peers []Peer `json:"peers"`
	Error string `json:"error,omitempty"`
}

// ClusterFailover is one failover of a shard as every agent that took part
// saw it: Sentinel's phases, each agent's actions, and the client-visible
// gap.
type ClusterFailover struct {
	Master string    `json:"master"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	At     time.Time `json:"at"` // the earliest an agent learnt of it
	// Nodes are the agents that reported it.
	Nodes []string `json:"nodes"`
	// Phases are Sentinel's, each at its earliest report by any agent.
	Phases []Phase `json:"phases"`
	// Actions are what each agent did about it, oldest first.
	Actions []Action `json:"actions"`
	// ConsulAt is when the new master was tagged in Consul (by the agent
	// beside it), TwemproxyAt when the last twemproxy that moved did,
	// HAProxyAt when the last HAProxy that moved did; zero when nobody
	// reported it.
	ConsulAt    time.Time `json:"consul_at,omitzero"`
	TwemproxyAt time.Time `json:"twemproxy_at,omitzero"`
	HAProxyAt   time.Time `json:"haproxy_at,omitzero"`
	// Gap is the client-visible gap: from Sentinel's first sign of the
	// failover (the master down, or the failover started) to the moment the
	// new master was reachable through Consul and every proxy (twemproxy or
	// HAProxy) that moved;
	// zero when not known.
	Gap time.Duration `json:"gap_ns,omitempty"`
}

// Phase is one step of Sentinel's failover.
type Phase struct {
	Name string    `json:"name"` // down, failover started, leader elected, replica chosen, promoted, announced, ended
	At   time.Time `json:"at"`
	Node string    `json:"node"` // the agent that saw it first
}

// Action is one thing an agent did about a failover.
type Action struct {
	Node   string    `json:"node"`
	At     time.Time `json:"at"`
	What   string    `json:"what"`
	Detail string    `json:"detail,omitempty"`
}

// Peer is another agent, found through its redis-consul-agent service.
type Peer struct {
	Node      string `json:"node"`
	ServiceID string `json:"service_id"`
	Addr      string `json:"addr,omitempty"` // its status API, Meta "http"
	Error     string `json:"error,omitempty"`
}

// Shard is one Sentinel master name with its registered nodes.
type Shard struct {
	Name string `json:"name"`
	// Truth is the Sentinel truth this agent holds for the shard, if any.
	Truth    *Master       `json:"truth,omitempty"`
	Masters  []ClusterNode `json:"masters"` // more than one passing is a split brain
	Replicas []ClusterNode `json:"replicas"`
	Other    []ClusterNode `json:"other"` // registered but critical with no role
	// Verdict sums the shard up for a glance: ok, degraded, split-brain
	// (more than one master answers in DNS) or down (none does). It is a
	// verdict on the shard, not a Consul check state: those are the Status
	// of each node.
	Verdict string `json:"verdict"`
	// Problems say in words why Verdict is not ok, in the order found.
	Problems []string `json:"problems,omitempty"`
}

// Shard verdicts (see discovery.Verdict, which gives them).
const (
	VerdictOK         = "ok"
	VerdictDegraded   = "degraded"
	VerdictSplitBrain = "split-brain"
	VerdictDown       = "down"
)

// ClusterNode is one registered service instance as Consul reports it.
type ClusterNode struct {
	ServiceID string            `json:"service_id"`
	Node      string            `json:"node"`
	Addr      string            `json:"addr"`
	Status    string            `json:"status"`
	Output    string            `json:"output"`
	Tags      []string          `json:"tags"`
	Meta      map[string]string `json:"meta,omitempty"`
}

// ClusterSentinel is one registered Sentinel.
type ClusterSentinel struct {
	ClusterNode
	// Agrees is true when this Sentinel's view of every master matches the truth.
	Agrees *bool `json:"agrees,omitempty"`
	// Up is whether this agent's link to the Sentinel works; nil when this
	// agent does not talk to it.
	Up *bool `json:"up,omitempty"`
	// View is the Sentinel's answer per master name, as this agent last read
	// it (master name -> host:port); empty when this agent does not talk to it.
	View map[string]string `json:"view,omitempty"`
}

// ClusterProxy is one registered twemproxy pool or HAProxy frontend.
type ClusterProxy struct {
	ClusterNode
	Kind string `json:"kind"` // ProxyTwemproxy or ProxyHAProxy
	// Pool is the twemproxy pool or the HAProxy frontend.
	Pool string `json:"pool"`
	// Proxy is the proxy's name in its agent's config (Meta "proxy").
	Proxy string `json:"proxy,omitempty"`
	// Servers are the HAProxy servers a frontend covers, from its Meta,
	// each compared with the Sentinel truth this agent holds.
	Servers []ClusterProxyServer `json:"servers,omitempty"`
	// Follows is true when every server the frontend covers points at the
	// Sentinel truth this agent holds, false when one does not; nil when
	// that is not known (a twemproxy pool, whose check says it; no truth;
	// a frontend whose Meta names no server).
	Follows *bool `json:"follows,omitempty"`
}

// Proxy kinds of ClusterProxy.
const (
	ProxyTwemproxy = "twemproxy"
	ProxyHAProxy   = "haproxy"
)

// ClusterProxyServer is one HAProxy server of a frontend, as its Meta says.
type ClusterProxyServer struct {
	Name       string `json:"name"` // backend/server
	MasterName string `json:"master_name"`
	Addr       string `json:"addr"`           // where HAProxy points it; empty when HAProxy lacks it
	Want       string `json:"want,omitempty"` // the Sentinel truth when it differs
	// Matches is false when the truth this agent holds names another
	// address (or HAProxy lacks the server); true when it names Addr or
	// when this agent holds no truth for the master name.
	Matches bool `json:"matches"`
}

// Report is what `redis-consul-agent status --json` prints: one agent's own
// state and the cluster it sees, as the agent served them.
type Report struct {
	Status  Snapshot `json:"status"`
	Cluster Cluster  `json:"cluster"`
}
