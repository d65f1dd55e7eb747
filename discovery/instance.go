package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// guardStale withdraws the master tag of a master that no Sentinel
// majority has confirmed for longer than grace. Without it, an old master
// cut off from every Sentinel (and from Consul) keeps asserting "master,
// warning", and the write that reaches Consul when the partition heals puts
// it back in DNS beside the new master.
func guardStale(d Decision, unconfirmed, grace time.Duration) Decision {
	if grace < 0 || d.Role != RoleMaster || d.Status != api.HealthWarning || unconfirmed <= grace {
		return d
	}
	return Decision{Role: RoleUnknown, Status: api.HealthCritical,
		Why: fmt.Sprintf("claims master, but no Sentinel majority has confirmed it for %s (stale_master_grace %s): not advertised as master in case it is cut off during a failover; %s",
			unconfirmed.Round(time.Millisecond), grace, d.Why)}
}

// TruthSource is what the role logic needs from the Monitor.
type TruthSource interface {
	Masters() map[string]Master
	Subscribe() (<-chan struct{}, func())
}

// Registry is what the runners need from the Registrar: hand over the
// desired state, which it writes only when it changed.
type Registry interface {
	Update(ctx context.Context, svc Service, h Health) error
}

// InstanceOptions configure the runner of one local Redis.
type InstanceOptions struct {
	Address    string // where the agent connects (host:port)
	Announce   string // what goes into Consul and what Sentinel calls it; default Address
	MasterName string // the Sentinel master name (shard); required
	Service    string // Consul service name; default "redis"
	Node       string // this agent's node name, for the status API

	Username  string
	Password  string
	TLSConfig *tls.Config

	// Tick is how often the role is re-read without a Sentinel event
	// (default 1s); Timeout bounds each read of Redis (default 500ms).
	Tick    time.Duration
	Timeout time.Duration
	// StaleMasterGrace is how long a local master keeps its master tag
	// (as warning) while no Sentinel majority confirms it (default 5s;
	// negative: for ever). An agent that reaches no Sentinel cannot tell
	// "the Sentinels are down" from "this node is cut off and being failed
	// over", so past the grace it withdraws the tag. Keep it below
	// Sentinel's down-after-milliseconds.
	StaleMasterGrace time.Duration

	// MasterHandoff is how long this node, once Sentinel promotes it,
	// waits for the old master to leave Consul's answers for the master
	// name (Peers) before it takes the master tag, so that DNS does not
	// answer both in a planned failover, where the old master's agent is
	// alive and withdraws within milliseconds. Past it (that agent is dead
	// and its check not expired yet) the tag is taken anyway, with a
	// warning. 0 or a nil Peers: at once.
	MasterHandoff time.Duration
	Peers         PeerQuery

	Truth    TruthSource // required: usually the Monitor
	Registry Registry    // required: usually the Registrar

	// Logger is used as is: pass the agent's
	// logger.Named(telemetry.LogRedis).With("service_id", ...). Metrics and
	// Journal are shared by the whole agent: nil Metrics means private ones,
	// a nil Journal records nothing.
	Logger  hclog.Logger
	Metrics *telemetry.Metrics
	Journal *telemetry.Journal
}

// InstanceStatus is a snapshot of one local Redis for the status API.
type InstanceStatus struct {
	Node       string
	Address    string
	Announce   string
	ServiceID  string
	MasterName string
	LocalRole  string // what ROLE says
	Role       string // what Consul shows
	Status     string
	Output     string
	Truth      string // the Sentinel truth used, "addr (source)"
	Version    string
	Updated    time.Time
	LastError  string
}

// Instance keeps one local Redis registered with the role the Sentinel
// truth allows (see Decide). It re-reads the role on every truth change for
// its master name, at once, and on a short tick.
type Instance struct {
	opts InstanceOptions
	log  hclog.Logger
	id   string
	host string
	port int

	client *redis.Client

	mu       sync.Mutex
	status   InstanceStatus
	lastRole string // role last written to Consul
	// confirmed is when a Sentinel majority or event last confirmed this
	// node as master (or Run started); only the Run loop touches it.
	confirmed time.Time
	lastTruth Master
	version   string
	reread    bool // read the version again: Redis was unreachable
}

// NewInstance checks the options and returns the runner; Run starts it.
func NewInstance(o InstanceOptions) (*Instance, error) {
	if o.Announce == "" {
		o.Announce = o.Address
	}
	if _, _, err := splitPort(o.Address); err != nil {
		return nil, fmt.Errorf("redis instance: %w", err)
	}
	host, port, err := splitPort(o.Announce)
	if err != nil {
		return nil, fmt.Errorf("redis instance %s: announce: %w", o.Address, err)
	}
	if o.MasterName == "" {
		return nil, fmt.Errorf("redis instance %s: master_name is required", o.Address)
	}
	if o.Truth == nil || o.Registry == nil {
		return nil, fmt.Errorf("redis instance %s: truth source and registry are required", o.Address)
	}
	if o.Service == "" {
		o.Service = "redis"
	}
	if o.StaleMasterGrace == 0 {
		o.StaleMasterGrace = 5 * time.Second
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.Discard()
	}
	id := ServiceID(o.Service, o.Announce)
	i := &Instance{
		opts: o,
		log:  o.Logger,
		id:   id,
		host: host,
		port: port,
	}
	i.status = InstanceStatus{
		Node: o.Node, Address: o.Address, Announce: o.Announce, ServiceID: id, MasterName: o.MasterName, Role: RoleUnknown,
	}
	return i, nil
}

// ServiceID is the Consul service ID this runner registers, so the owner can
// remove it when the instance leaves the configuration.
func (i *Instance) ServiceID() string { return i.id }

// Status returns a snapshot for the status API.
func (i *Instance) Status() InstanceStatus {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.status
}

// Run keeps the registration in step until ctx is done and returns nil.
// It does not deregister: the Registrar's owner decides that.
func (i *Instance) Run(ctx context.Context) error {
	i.client = redis.NewClient(failFast(i.opts.Address, i.opts.Username, i.opts.Password, i.opts.TLSConfig, i.opts.Timeout, 2))
	defer i.client.Close()
	notify, unsubscribe := i.opts.Truth.Subscribe()
	defer unsubscribe()
	tick := time.NewTicker(i.opts.Tick)
	defer tick.Stop()

	i.confirmed = time.Now()
	i.evaluate(ctx, "start")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			i.evaluate(ctx, "tick")
		case <-notify:
			t := i.opts.Truth.Masters()[i.opts.MasterName]
			i.mu.Lock()
			prev := i.lastTruth
			i.mu.Unlock()
			if !sameAddr(t.Addr, prev.Addr) || t.Known() != prev.Known() {
				i.withdraw(ctx, t)
				i.evaluate(ctx, "sentinel")
			}
		}
	}
}

// evaluate reads Redis, decides and hands the result to the Registry.
func (i *Instance) evaluate(ctx context.Context, why string) {
	local := i.read(ctx)
	if ctx.Err() != nil {
		return
	}
	truth := i.opts.Truth.Masters()[i.opts.MasterName]
	d := Decide(local, truth, i.opts.Announce, i.opts.Address)
	if d.Role == RoleMaster && d.Status == api.HealthPassing {
		i.confirmed = time.Now()
	}
	d = guardStale(d, time.Since(i.confirmed), i.opts.StaleMasterGrace)
	i.mu.Lock()
	wasMaster := i.lastRole == RoleMaster
	i.mu.Unlock()
	if d.Role == RoleMaster && !wasMaster {
		i.handoff(ctx)
	}
	i.publish(ctx, d, local, truth, why)
}

// withdraw drops the master tag at once, before Redis is read again, when
// the truth has just named another node while Consul still shows this one
// as master: whatever Redis says now, this node must not answer master.redis
// any more, and in a planned failover the new master's agent waits for
// exactly this write (see handoff). evaluate writes the full picture next.
func (i *Instance) withdraw(ctx context.Context, truth Master) {
	i.mu.Lock()
	wasMaster, version := i.lastRole == RoleMaster, i.version
	i.mu.Unlock()
	if !wasMaster || !truth.Known() || sameAddr(truth.Addr, i.opts.Announce) || sameAddr(truth.Addr, i.opts.Address) {
		return
	}
	d := Decision{Role: RoleUnknown, Status: api.HealthCritical,
		Why: fmt.Sprintf("Sentinel now names %s (%s): master tag withdrawn, reading this node again", truth.Addr, truth.Source)}
	i.publish(ctx, d, LocalState{Version: version}, truth, "sentinel")
}

// publish hands decision d to the Registry and records it for the status
// API, the metrics and the log.
func (i *Instance) publish(ctx context.Context, d Decision, local LocalState, truth Master, why string) {
	svc := Service{
		ID:      i.id,
		Name:    i.opts.Service,
		Tags:    roleTags(d.Role, i.opts.MasterName),
		Meta:    map[string]string{"role": d.Role, "master_name": i.opts.MasterName},
		Address: i.host,
		Port:    i.port,
	}
	if d.MasterAddr != "" {
		svc.Meta["master_addr"] = d.MasterAddr
	}
	if local.Version != "" {
		svc.Meta["redis_version"] = local.Version
	}
	err := i.opts.Registry.Update(ctx, svc, Health{Status: d.Status, Output: d.Why})
	now := time.Now()

	i.mu.Lock()
	prevRole := i.lastRole
	i.lastTruth = truth
	i.status.LocalRole = local.Role
	i.status.Role, i.status.Status, i.status.Output = d.Role, d.Status, d.Why
	i.status.Version = local.Version
	i.status.Truth = ""
	if truth.Addr != "" {
		i.status.Truth = truth.Addr + " (" + truth.Source + ")"
	}
	i.status.Updated = now
	if err == nil {
		i.lastRole = d.Role
		i.status.LastError = ""
	} else {
		i.status.LastError = err.Error()
	}
	i.mu.Unlock()
	if err != nil {
		return // the Registrar logged it and retries
	}
	if d.Role != prevRole {
		telemetry.SetOneOf(i.opts.Metrics.RedisRole, []string{i.id, i.opts.MasterName}, d.Role,
			RoleMaster, RoleReplica, RoleUnknown)
		i.log.Info("role", "role", d.Role, "status", d.Status, "why", d.Why, "trigger", why)
	}
	if d.Role == RoleMaster && prevRole != RoleMaster {
		if took, ok := i.opts.Journal.Applied("consul", i.opts.MasterName, truth.Addr, now); ok {
			i.opts.Metrics.Reaction.WithLabelValues("consul").Observe(took.Seconds())
			i.log.Info("failover applied in consul", "master_name", i.opts.MasterName, "took", took)
		}
	}
}

// roleTags are the tags of DESIGN §5 for a role; none for RoleUnknown.
func roleTags(role, masterName string) []string {
	if role != RoleMaster && role != RoleReplica {
		return nil
	}
	return []string{role, DNSLabel(masterName) + "-" + role}
}

// read asks Redis for ROLE and INFO in one round trip.
func (i *Instance) read(ctx context.Context) LocalState {
	i.mu.Lock()
	st := LocalState{LastRole: i.lastRole, Version: i.version}
	reread := i.version == "" || i.reread
	i.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, i.opts.Timeout)
	defer cancel()
	pipe := i.client.Pipeline()
	roleCmd := pipe.Do(rctx, "role")
	replCmd := pipe.Info(rctx, "replication")
	persCmd := pipe.Info(rctx, "persistence")
	var serverCmd *redis.StringCmd
	if reread {
		serverCmd = pipe.Info(rctx, "server")
	}
	_, _ = pipe.Exec(rctx)

	if err := roleCmd.Err(); err != nil {
		if strings.HasPrefix(err.Error(), "LOADING") {
			st.Reachable, st.Loading = true, true
			return st
		}
		st.Err = err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			st.Err = fmt.Sprintf("no answer within %s", i.opts.Timeout)
		}
		// It may come back upgraded: read the version again then, but
		// keep the last one meanwhile so Meta does not churn.
		i.mu.Lock()
		i.reread = true
		i.mu.Unlock()
		return st
	}
	st.Reachable = true
	v, err := roleCmd.Slice()
	if err == nil {
		var r roleInfo
		r, err = parseRole(v)
		st.Role, st.MasterAddr, st.Offset, st.Replicas = r.Role, r.MasterAddr, r.Offset, r.Replicas
	}
	if err != nil {
		st.Reachable, st.Err = false, err.Error()
		return st
	}
	if info, err := persCmd.Result(); err == nil && infoField(info, "loading") == "1" {
		st.Loading = true
	}
	if info, err := replCmd.Result(); err == nil && st.Role == RoleReplica {
		st.LinkUp = infoField(info, "master_link_status") == "up"
		if s, err := strconv.Atoi(infoField(info, "master_link_down_since_seconds")); err == nil && s >= 0 && !st.LinkUp {
			st.LinkDown = time.Duration(s) * time.Second
		}
	}
	if serverCmd != nil {
		if info, err := serverCmd.Result(); err == nil {
			st.Version = infoField(info, "redis_version")
			i.mu.Lock()
			i.version, i.reread = st.Version, false
			i.mu.Unlock()
		}
	}
	return st
}

// infoField returns the value of key in INFO output, "" if absent. It runs
// for every local Redis every tick, so it scans without building a map.
func infoField(s, key string) string {
	for len(s) > 0 {
		line, rest, _ := strings.Cut(s, "\n")
		s = rest
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// PeerQuery lists the instances of service tagged tag, other than self,
// that Consul does not hold critical (DNS answers them), as "id (address)";
// it blocks up to wait for a change after index, and returns the index to
// block on next.
type PeerQuery func(ctx context.Context, service, tag, self string, index uint64, wait time.Duration) (others []string, next uint64, err error)

// ConsulPeers is the PeerQuery of a Consul client: a blocking health query.
func ConsulPeers(c *api.Client) PeerQuery {
	return func(ctx context.Context, service, tag, self string, index uint64, wait time.Duration) ([]string, uint64, error) {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
		entries, meta, err := c.Health().Service(service, tag, false, q)
		if err != nil {
			return nil, index, err
		}
		var others []string
		for _, e := range entries {
			if e.Service == nil || e.Service.ID == self || e.Checks.AggregatedStatus() == api.HealthCritical {
				continue
			}
			addr := e.Service.Address
			if addr == "" && e.Node != nil {
				addr = e.Node.Address
			}
			others = append(others, fmt.Sprintf("%s (%s:%d)", e.Service.ID, addr, e.Service.Port))
		}
		return others, meta.LastIndex, nil
	}
}

// handoff waits, up to MasterHandoff, until Consul answers no other node
// for this master name's master tag. A failed query does not hold the
// promotion back.
func (i *Instance) handoff(ctx context.Context) {
	if i.opts.Peers == nil || i.opts.MasterHandoff <= 0 {
		return
	}
	start := time.Now()
	deadline := start.Add(i.opts.MasterHandoff)
	tag := DNSLabel(i.opts.MasterName) + "-" + RoleMaster
	var index uint64
	for {
		// A blocking query without a wait time would block for minutes.
		wait := max(time.Until(deadline), time.Millisecond)
		qctx, cancel := context.WithDeadline(ctx, deadline.Add(i.opts.Timeout))
		others, next, err := i.opts.Peers(qctx, i.opts.Service, tag, i.id, index, wait)
		cancel()
		switch {
		case err != nil:
			i.log.Warn("master handoff: cannot ask consul whether the old master left its answers; taking the master tag", "error", err)
			return
		case len(others) == 0:
			if index != 0 {
				i.log.Info("master handoff: the old master left consul's answers", "waited", time.Since(start).Round(time.Microsecond))
			}
			return
		case time.Until(deadline) < time.Millisecond || ctx.Err() != nil:
			old := strings.Join(others, ", ")
			i.log.Warn("master handoff: consul still answers the old master; taking the master tag anyway (its agent may be dead: it stays in DNS until its check expires)",
				"old", old, "waited", time.Since(start).Round(time.Millisecond))
			i.opts.Journal.Add(telemetry.Event{Kind: telemetry.KindConsul, Type: "handoff", Subject: i.id, Level: "warn",
				Detail: fmt.Sprintf("still tagged %s after %s: %s", tag, i.opts.MasterHandoff, old)})
			return
		}
		if next < index { // the index went backwards (a new leader, a snapshot): start over
			next = 0
		}
		index = next
	}
}
