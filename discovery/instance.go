package discovery

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// TruthSource is what the role logic needs from the Monitor.
type TruthSource interface {
	Masters() map[string]Master
	Subscribe() (<-chan struct{}, func())
}

// Registry is what the runners need from the Registrar: hand over the
// desired state, which it writes only when it changed.
type Registry interface {
	Update(ctx context.Context, svc Service, h Health) error
	// Lapsed reports, once, that Consul turned the master registration id
	// critical because the agent missed its TTL (a frozen or starved
	// process): the master tag it held is gone, and the Registrar writes
	// nothing for id until an Update after this call (see
	// Registrar.Lapsed).
	Lapsed(id string) bool
}

// InstanceOptions configure the runner of one local Redis.
type InstanceOptions struct {
	Address    string // where the agent connects (host:port)
	Announce   string // what goes into Consul and what Sentinel calls it; default Address
	MasterName string // the Sentinel master name (shard); required
	Service    string // Consul service name; default consulname.Redis
	Node       string // this agent's node name, for the status API

	Username  string
	Password  string
	TLSConfig *tls.Config

	// Tick is how often the role is re-read without a Sentinel event
	// (default 1s); Timeout bounds each read of Redis and each lookup of a
	// hostname Sentinel reports (default 500ms).
	Tick    time.Duration
	Timeout time.Duration
	// StaleMasterGrace is how long a local master keeps its master tag
	// (as warning) while no Sentinel majority confirms it (default 5s;
	// negative: for ever). An agent that reaches no Sentinel cannot tell
	// "the Sentinels are down" from "this node is cut off and being failed
	// over", so past the grace it withdraws the tag. Keep it below
	// Sentinel's down-after-milliseconds.
	StaleMasterGrace time.Duration
	// TruthWait is how long Run waits, before its first write, for the
	// Sentinel truth of the master name (0: it does not wait). A role
	// decided before the first truth is decided on nothing: an old master
	// that came back at the same moment as its agent would look like a
	// master. Past the wait the role is written without the truth, and a
	// master gets no master tag until the truth names it (see Decide).
	TruthWait time.Duration

	// MasterHandoff is how long this node, once Sentinel promotes it,
	// waits for the old master to leave Consul's answers for the master
	// name (Peers) before it takes the master tag, so that DNS does not
	// answer both in a planned failover, where the old master's agent is
	// alive and withdraws within milliseconds. See handoffStep for what
	// happens at the bound. 0 or a nil Peers: at once.
	MasterHandoff time.Duration
	Peers         PeerQuery
	// HandoffLimit is how long, in all, a handoff goes on waiting past
	// MasterHandoff while a node Consul still answers as master is alive
	// (it answers Redis): its agent is cut off from Consul, the node may
	// still take writes, and its check expires within that agent's
	// consul.ttl. The agent sets it to consul.ttl plus a margin; 0 or less
	// than MasterHandoff: MasterHandoff alone bounds the wait.
	HandoffLimit time.Duration

	Truth    TruthSource // required: usually the Monitor
	Registry Registry    // required: usually the Registrar

	// PauseWrites makes the agent beside a master that Sentinel fails over
	// stop it acknowledging writes (CLIENT PAUSE WRITE, renewed every
	// third of PauseSlice, default 300ms) until it is a replica of the new
	// master or the failover aborts, and withdraw its master tag at that
	// moment (see pauseStep). Failovers is required with it: usually the
	// Monitor, which must follow promotions or announcements alike.
	PauseWrites bool
	PauseSlice  time.Duration
	Failovers   FailoverSource

	// Logger is used as is: pass the agent's
	// logger.Named(telemetry.LogRedis).With("service_id", ...). Metrics is
	// required and shared by the whole agent (telemetry.Discard() records
	// nothing); a nil Journal records nothing.
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
	// WritesPaused is set while the agent holds this Redis's writes paused
	// during a failover of it, since PausedSince, for PauseWhy.
	WritesPaused bool
	PausedSince  time.Time
	PauseWhy     string
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
	self []string // the announce and the connect address

	client *redis.Client
	// names resolves the hostnames Sentinel may report; only the Run
	// loop touches it.
	names *nameResolver
	// pause is nil unless PauseWrites; its changed channel wakes Run.
	pause *pauser

	mu       sync.Mutex
	status   InstanceStatus
	lastRole string // role last written to Consul
	// confirmed is when a Sentinel majority or event last confirmed this
	// node as master (or Run started); only the Run loop touches it.
	confirmed time.Time
	// handoffBlind is set while handoffs end unknown (Consul cannot be
	// asked), so that the outage is logged once. Only the Run loop
	// touches it.
	handoffBlind bool
	lastTruth    Master
	version      string
	reread       bool // read the version again: Redis was unreachable
}

// NewInstance checks the options and returns the runner; Run starts it.
func NewInstance(o InstanceOptions) (*Instance, error) {
	if o.Announce == "" {
		o.Announce = o.Address
	}
	if _, _, err := addr.Split(o.Address); err != nil {
		return nil, fmt.Errorf("redis instance: %w", err)
	}
	host, port, err := addr.Split(o.Announce)
	if err != nil {
		return nil, fmt.Errorf("redis instance %s: announce: %w", o.Address, err)
	}
	if o.MasterName == "" {
		return nil, fmt.Errorf("redis instance %s: master_name is required", o.Address)
	}
	if o.Truth == nil || o.Registry == nil {
		return nil, fmt.Errorf("redis instance %s: truth source and registry are required", o.Address)
	}
	if o.Metrics == nil {
		return nil, fmt.Errorf("redis instance %s: metrics are required (telemetry.Discard() records none)", o.Address)
	}
	if o.Service == "" {
		o.Service = consulname.Redis
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
	if o.PauseWrites && o.Failovers == nil {
		return nil, fmt.Errorf("redis instance %s: pausing writes needs a failover source", o.Address)
	}
	if o.PauseSlice <= 0 {
		o.PauseSlice = defaultPauseSlice
	}
	id := consulname.ServiceID(o.Service, o.Announce)
	i := &Instance{
		opts:  o,
		log:   o.Logger,
		id:    id,
		host:  host,
		port:  port,
		self:  []string{o.Announce, o.Address},
		names: newNameResolver(o.Timeout, nameTTL, o.Logger),
	}
	if o.PauseWrites {
		i.pause = &pauser{
			masterName: o.MasterName, id: id, self: i.self, slice: o.PauseSlice, timeout: o.Timeout,
			truth: o.Truth, failovers: o.Failovers, names: newNameResolver(o.Timeout, nameTTL, o.Logger),
			log: o.Logger, metrics: o.Metrics, journal: o.Journal, changed: make(chan struct{}, 1),
		}
	}
	i.status = InstanceStatus{
		Node: o.Node, Address: o.Address, Announce: o.Announce, ServiceID: id, MasterName: o.MasterName, Role: consulname.RoleUnknown,
	}
	return i, nil
}

// nameTTL is how long a resolved hostname is trusted: short, so that a node
// that moves is recognised within a few ticks, long enough that a tick
// costs no lookup.
const nameTTL = 5 * time.Second

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
	var paused <-chan struct{}
	if p := i.pause; p != nil {
		p.client = redis.NewClient(failFast(i.opts.Address, i.opts.Username, i.opts.Password, i.opts.TLSConfig, i.opts.Timeout, 1))
		paused = p.changed
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			p.run(ctx)
		}()
	}
	notify, unsubscribe := i.opts.Truth.Subscribe()
	defer unsubscribe()
	if !i.waitFirstTruth(ctx, notify) {
		return nil
	}
	tick := time.NewTicker(i.opts.Tick)
	defer tick.Stop()

	i.confirmed = time.Now()
	// again fires shortly after a handoff that could not ask Consul, so
	// that the tag is taken as soon as Consul answers, not a tick later.
	var again <-chan time.Time
	evaluate := func(why string) {
		again = nil
		if i.evaluate(ctx, why) {
			again = time.After(handoffRetryPause)
		}
	}
	evaluate("start")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			evaluate("tick")
		case <-again:
			evaluate("handoff")
		case <-paused:
			evaluate("write pause")
		case <-notify:
			t := i.truth()
			i.mu.Lock()
			prev := i.lastTruth
			i.mu.Unlock()
			names := i.names.names(ctx, i.self, t.Addr, prev.Addr)
			if !names.Same(t.Addr, prev.Addr) || t.Known() != prev.Known() {
				i.withdraw(ctx, t, names)
				evaluate("sentinel")
			}
		}
	}
}

// truth is the Monitor's truth for this master name now.
func (i *Instance) truth() Master { return i.opts.Truth.Masters()[i.opts.MasterName] }

// waitFirstTruth holds the first write back until the truth for the master
// name is known, or TruthWait has passed. It reports false if ctx ended.
func (i *Instance) waitFirstTruth(ctx context.Context, notify <-chan struct{}) bool {
	if i.opts.TruthWait <= 0 {
		return ctx.Err() == nil
	}
	start := time.Now()
	timer := time.NewTimer(i.opts.TruthWait)
	defer timer.Stop()
	for !i.truth().Known() {
		select {
		case <-ctx.Done():
			return false
		case <-notify:
		case <-timer.C:
			t := i.truth()
			i.log.Warn("no Sentinel truth for the master name yet: registering now, and without the master tag until Sentinel names this node",
				"master_name", i.opts.MasterName, "waited", i.opts.TruthWait, "reporting", t.Reporting, "sentinels", t.Total)
			return true
		}
	}
	i.log.Debug("first Sentinel truth", "master_name", i.opts.MasterName, "waited", time.Since(start).Round(time.Microsecond))
	return true
}

// evaluate reads Redis, decides and hands the result to the Registry. A
// node about to gain the master tag first waits for the handoff, and then
// decides again: the wait may have lasted long enough for the truth or the
// role to change, and a decision made before it must not be published. It
// reports whether the handoff is still going on (Consul could not be
// asked), so that the caller evaluates again shortly.
func (i *Instance) evaluate(ctx context.Context, why string) bool {
	local, truth, d := i.decide(ctx)
	if ctx.Err() != nil {
		return false
	}
	pending := false
	if d.Role == consulname.RoleMaster && !i.holdsMaster() && i.opts.Peers != nil && i.opts.MasterHandoff > 0 {
		verdict, reason := i.handoff(ctx)
		if ctx.Err() != nil {
			return false
		}
		local, truth, d = i.decide(ctx)
		if ctx.Err() != nil {
			return false
		}
		if d.Role == consulname.RoleMaster && verdict != handoffTake && verdict != handoffTakeAnyway {
			// Consul could not be asked, or the truth came back to this
			// node in the instant after the handoff gave up: hand off
			// again shortly, registered without the master tag meanwhile.
			pending = true
			d = Decision{Role: consulname.RoleUnknown, Status: api.HealthWarning,
				Why: "Sentinel names this node master, but its master handoff did not complete (" + reason + "): trying again; " + d.Why}
		}
	}
	if !pending {
		i.handoffBlind = false
	}
	i.publish(ctx, d, local, truth, why)
	return pending
}

// decide reads Redis and the truth of this moment and applies Decide and
// guardStale.
func (i *Instance) decide(ctx context.Context) (LocalState, Master, Decision) {
	if i.opts.Registry.Lapsed(i.id) {
		// Consul took the tag away while this agent did not run; other
		// agents may have acted on that. It is gained again only as a node
		// that does not hold it: a truth naming it, and the handoff.
		i.mu.Lock()
		i.lastRole = consulname.RoleUnknown
		i.mu.Unlock()
		i.log.Warn("the master registration lapsed while the agent did not run: deciding as a node without the master tag")
	}
	local := i.read(ctx)
	truth := i.truth()
	d := Decide(local, truth, i.names.names(ctx, i.self, truth.Addr, local.MasterAddr))
	if d.Role == consulname.RoleMaster && d.Status == api.HealthPassing {
		i.confirmed = time.Now()
	}
	d = guardStale(d, time.Since(i.confirmed), i.opts.StaleMasterGrace)
	if ps := i.pause.current(); ps.Active {
		d = pausedDecision(d, ps.Why)
	}
	return local, truth, d
}

// holdsMaster reports whether Consul has this node with the master tag.
func (i *Instance) holdsMaster() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.lastRole == consulname.RoleMaster
}

// withdraw drops the master tag at once, before Redis is read again, when
// the truth has just named another node while Consul still shows this one
// as master: whatever Redis says now, this node must not answer master.redis
// any more, and in a planned failover the new master's agent waits for
// exactly this write (see handoffStep). evaluate writes the full picture next.
func (i *Instance) withdraw(ctx context.Context, truth Master, names Names) {
	i.mu.Lock()
	wasMaster, version := i.lastRole == consulname.RoleMaster, i.version
	i.mu.Unlock()
	if !wasMaster || !truth.Known() || names.IsSelf(truth.Addr) {
		return
	}
	d := Decision{Role: consulname.RoleUnknown, Status: api.HealthCritical,
		Why: fmt.Sprintf("Sentinel now names %s (%s): master tag withdrawn, reading this node again", truth.Addr, truth.Source)}
	i.publish(ctx, d, LocalState{Version: version}, truth, "sentinel")
}

// publish hands decision d to the Registry and records it for the status
// API, the metrics and the log.
func (i *Instance) publish(ctx context.Context, d Decision, local LocalState, truth Master, why string) {
	svc := Service{
		ID:      i.id,
		Name:    i.opts.Service,
		Tags:    consulname.RoleTags(d.Role, i.opts.MasterName),
		Meta:    map[string]string{consulname.MetaRole: d.Role, consulname.MetaMasterName: i.opts.MasterName},
		Address: i.host,
		Port:    i.port,
	}
	if d.MasterAddr != "" {
		svc.Meta[consulname.MetaMasterAddr] = d.MasterAddr
	}
	if local.Version != "" {
		svc.Meta[consulname.MetaRedisVersion] = local.Version
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
	ps := i.pause.current()
	i.status.WritesPaused, i.status.PausedSince, i.status.PauseWhy = ps.Active, ps.Since, ps.Why
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
			consulname.RoleMaster, consulname.RoleReplica, consulname.RoleUnknown)
		i.log.Info("role", "role", d.Role, "status", d.Status, "why", d.Why, "trigger", why)
	}
	if d.Role == consulname.RoleMaster && prevRole != consulname.RoleMaster {
		if took, ok := i.opts.Journal.AppliedConsul(i.opts.MasterName, truth.Addr, now); ok {
			i.opts.Metrics.Reaction.WithLabelValues("consul").Observe(took.Seconds())
			i.log.Info("failover applied in consul", "master_name", i.opts.MasterName, "took", took)
		}
	}
}
