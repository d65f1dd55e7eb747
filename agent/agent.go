// Package agent wires the parts of redis-consul-agent together from a
// configuration: the Consul registrar, the Sentinel monitor, a runner per
// local Redis, Sentinel and twemproxy, and the HTTP surface. It owns the
// lifecycle: start, SIGHUP reload, graceful stop that deregisters everything.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo"
	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/haproxy"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Options configure an Agent.
type Options struct {
	Config *config.Config
	// Reload returns the configuration to switch to on SIGHUP; the CLI
	// passes a function that reads the file again.
	Reload func() (*config.Config, error)
	Logger hclog.Logger
	// SetLevel, if set, is called with a reloaded log.level.
	SetLevel func(string)
}

// Agent is one running redis-consul-agent.
type Agent struct {
	opts     Options
	log      hclog.Logger
	registry *prometheus.Registry
	metrics  *telemetry.Metrics
	journal  *telemetry.Journal
	started  time.Time

	mu  sync.Mutex
	cfg *config.Config

	consul    *api.Client
	registrar *discovery.Registrar
	monitor   *discovery.Monitor

	redis     group
	sentinels group
	proxies   group

	// peerCache holds the other agents' latest failover reports, for the
	// merged timeline of /v1/cluster (see peers.go).
	peerCache peerCache
	haproxies group
	// haproxyMetrics are the HAProxy drivers', declared by that package.
	haproxyMetrics *haproxy.Metrics
}

// New checks what can be checked before anything starts: the Consul client
// and the TLS files.
func New(o Options) (*Agent, error) {
	if o.Config == nil {
		return nil, errors.New("agent: no config")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := &Agent{
		opts:     o,
		log:      o.Logger.Named(telemetry.LogAgent),
		registry: reg,
		metrics:  telemetry.NewMetrics(reg),
		journal:  telemetry.NewJournal(300),
		started:  time.Now(),
		cfg:      o.Config,
	}
	a.metrics.SetBuild(buildinfo.Version, buildinfo.CommitOrVCS())
	reg.MustRegister(stateCollector{a}) // reads a.monitor and a.proxies at scrape time
	a.haproxyMetrics = haproxy.NewMetrics(reg)
	c := o.Config
	a.prime(c)
	client, err := discovery.NewConsulClient(discovery.ConsulOptions{
		Address: c.Consul.Address, Scheme: c.Consul.Scheme, Token: c.Consul.Token,
		CAFile: c.Consul.CAFile, CertFile: c.Consul.CertFile, KeyFile: c.Consul.KeyFile,
		TLSServerName: c.Consul.TLSServerName, InsecureSkipVerify: c.Consul.InsecureSkipVerify,
		Datacenter: c.Consul.Datacenter,
	})
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	a.consul = client
	a.registrar, err = discovery.NewRegistrar(discovery.RegistrarOptions{
		Client: client, TTL: c.Consul.TTL.D(), DeregisterCriticalAfter: c.Consul.DeregisterAfter.D(),
		ResyncInterval: c.Timing.ConsulResync.D(), Heartbeat: heartbeat(c),
		Logger: o.Logger.Named(telemetry.LogConsul), Metrics: a.metrics, Journal: a.journal,
	})
	if err != nil {
		return nil, err
	}
	sentinelTLS, err := tlsConfig(c.Sentinel.TLS)
	if err != nil {
		return nil, fmt.Errorf("sentinel.tls: %w", err)
	}
	mo := discovery.MonitorOptions{
		Addresses: c.Sentinel.Addresses, Username: c.Sentinel.Username, Password: c.Sentinel.Password,
		TLSConfig: sentinelTLS, QueryTimeout: c.Timing.SentinelTimeout.D(), ResyncInterval: c.Timing.SentinelResync.D(),
		FollowPromotion: c.Failover.ActOn == config.ActOnPromotion,
		Logger:          o.Logger.Named(telemetry.LogSentinel), Metrics: a.metrics, Journal: a.journal,
	}
	if c.Sentinel.ConsulService != "" {
		mo.Discover = discovery.ConsulSentinels(client, c.Sentinel.ConsulService)
	}
	// The Monitor confirms a +switch-master with ROLE on the named node:
	// with sentinel.redis_auth when set, else with the first local Redis
	// entry's credentials, which in practice are the same for every node of
	// a shard (docs/CONFIG.md).
	if ra := c.Sentinel.RedisAuth; !ra.IsZero() {
		mo.RedisUsername, mo.RedisPassword = ra.Username, ra.Password
		if mo.RedisTLSConfig, err = tlsConfig(ra.TLS); err != nil {
			return nil, fmt.Errorf("sentinel.redis_auth.tls: %w", err)
		}
	} else if len(c.Redis) > 0 {
		r := c.Redis[0]
		mo.RedisUsername, mo.RedisPassword = r.Username, r.Password
		if mo.RedisTLSConfig, err = tlsConfig(r.TLS); err != nil {
			return nil, fmt.Errorf("redis[0].tls: %w", err)
		}
	}
	if len(c.Sentinel.Addresses) > 0 || mo.Discover != nil {
		if a.monitor, err = discovery.NewMonitor(mo); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Run runs every role until ctx is done, reloading on each receive from
// reload, then stops every runner and deregisters everything it registered.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}) error {
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBG()
	var wg sync.WaitGroup
	spawn := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(bg); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("component stopped", "component", name, "error", err)
			}
		}()
	}
	spawn("registrar", a.registrar.Run)
	if a.monitor != nil {
		spawn("sentinel monitor", a.monitor.Run)
	}
	if err := a.startHTTP(bg); err != nil {
		cancelBG()
		wg.Wait()
		return err
	}

	a.journal.Add(telemetry.Event{Kind: telemetry.KindAgent, Type: "start", Subject: a.cfg.NodeName, Detail: buildinfo.String()})
	a.log.Info("agent started", "node", a.cfg.NodeName, "redis", len(a.cfg.Redis), "sentinels", len(a.cfg.Sentinels),
		"twemproxy", len(a.cfg.Twemproxy), "http", a.cfg.HTTP.Address, "version", buildinfo.Version)
	a.apply(bg, a.cfg)

	for {
		select {
		case <-reload:
			a.reload(bg)
		case <-ctx.Done():
			a.log.Info("stopping: deregistering every service this agent registered")
			a.redis.stop()
			a.sentinels.stop()
			a.proxies.stop()
			a.haproxies.stop()
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := a.registrar.DeregisterAll(dctx); err != nil {
				a.log.Error("deregister on stop", "error", err)
			}
			cancel()
			cancelBG()
			wg.Wait()
			a.log.Info("stopped")
			return nil
		}
	}
}

// reload reads the configuration again and applies what changed. A bad
// file changes nothing: the agent keeps running the last good one.
func (a *Agent) reload(ctx context.Context) {
	if a.opts.Reload == nil {
		return
	}
	c, err := a.opts.Reload()
	if err != nil {
		a.log.Error("reload: keeping the running configuration", "error", err)
		a.journal.Add(telemetry.Event{Kind: telemetry.KindAgent, Type: "reload-failed", Subject: a.cfg.NodeName, Detail: err.Error(), Level: telemetry.LevelError})
		return
	}
	old := a.cfg
	for _, section := range restartOnly(old, c) {
		a.log.Warn("reload: this section changed but takes effect only after a restart", "section", section)
	}
	if c.Log.Level != old.Log.Level && a.opts.SetLevel != nil {
		a.opts.SetLevel(c.Log.Level)
	}
	a.mu.Lock()
	a.cfg = c
	a.mu.Unlock()
	a.prime(c)
	a.apply(ctx, c)
	a.log.Info("reloaded", "redis", len(c.Redis), "sentinels", len(c.Sentinels), "twemproxy", len(c.Twemproxy))
	a.journal.Add(telemetry.Event{Kind: telemetry.KindAgent, Type: "reload", Subject: c.NodeName})
}

// restartOnly names the sections that a reload does not apply.
func restartOnly(old, c *config.Config) []string {
	var out []string
	if !equal(old.Consul, c.Consul) {
		out = append(out, "consul")
	}
	if !equal(old.Sentinel, c.Sentinel) {
		out = append(out, "sentinel")
	}
	if old.HTTP != c.HTTP {
		out = append(out, "http")
	}
	if old.Timing != c.Timing {
		out = append(out, "timing")
	}
	if old.Failover != c.Failover {
		out = append(out, "failover")
	}
	if old.NodeName != c.NodeName {
		out = append(out, "node_name")
	}
	return out
}

// prime creates the metric series this configuration will use.
func (a *Agent) prime(c *config.Config) {
	var masters, proxies []string
	for _, r := range c.Redis {
		masters = append(masters, r.MasterName)
	}
	for _, t := range c.Twemproxy {
		proxies = append(proxies, t.Name)
	}
	a.metrics.Prime(discovery.Channels, masters, proxies)
}

// apply makes the running runners match c.
func (a *Agent) apply(ctx context.Context, c *config.Config) {
	desired := map[string]any{}
	for _, r := range c.Redis {
		desired[consulname.ServiceID(r.Service, r.Announce)] = r
	}
	a.report("redis", a.redis.sync(ctx, desired, func(id string, spec any) (component, error) {
		return a.startRedis(id, spec.(config.Redis), c)
	}))

	desired = map[string]any{}
	for _, s := range c.Sentinels {
		desired[consulname.ServiceID(s.Service, s.Announce)] = s
	}
	a.report("sentinel", a.sentinels.sync(ctx, desired, func(id string, spec any) (component, error) {
		return a.startSentinel(id, spec.(config.LocalSentinel), c)
	}))

	desired = map[string]any{}
	for _, t := range c.Twemproxy {
		desired[t.Name] = t
	}
	a.report("twemproxy", a.proxies.sync(ctx, desired, func(name string, spec any) (component, error) {
		return a.startProxy(name, spec.(config.Twemproxy), c)
	}))
	a.applyHAProxy(ctx, c)
}

func (a *Agent) report(kind string, errs []error) {
	for _, err := range errs {
		a.log.Error("cannot start", "kind", kind, "error", err)
		a.journal.Add(telemetry.Event{Kind: telemetry.KindAgent, Type: "start-failed", Subject: kind, Detail: err.Error(), Level: telemetry.LevelError})
	}
}

// removeService is the removal hook of a runner: its registration goes too.
func (a *Agent) removeService(id string) func(context.Context) {
	return func(ctx context.Context) {
		if err := a.registrar.Remove(ctx, id); err != nil {
			a.log.Error("deregister removed service", "service_id", id, "error", err)
		}
	}
}

func (a *Agent) startRedis(id string, r config.Redis, c *config.Config) (component, error) {
	if a.monitor == nil {
		return component{}, fmt.Errorf("redis %s: no Sentinels configured", r.Address)
	}
	tc, err := tlsConfig(r.TLS)
	if err != nil {
		return component{}, fmt.Errorf("redis %s: %w", r.Address, err)
	}
	inst, err := discovery.NewInstance(discovery.InstanceOptions{
		Address: r.Address, Announce: r.Announce, MasterName: r.MasterName, Service: r.Service, Node: c.NodeName,
		Username: r.Username, Password: r.Password, TLSConfig: tc, Tick: c.Timing.Tick.D(),
		StaleMasterGrace: c.Timing.StaleMasterGrace.D(), TruthWait: c.Timing.TruthWait.D(),
		MasterHandoff: c.Timing.MasterHandoff.D(), Peers: discovery.ConsulPeers(a.consul),
		// A live old master cut off from Consul leaves its answers when its
		// heartbeat TTL expires (its agent has the same consul.ttl).
		HandoffLimit: c.Consul.TTL.D() + c.Timing.MasterHandoff.D(),
		Truth:        a.monitor, Registry: a.registrar,
		PauseWrites: bool(c.Failover.PauseWrites), PauseSlice: c.Failover.PauseSlice.D(), Failovers: a.monitor,
		Logger: a.opts.Logger.Named(telemetry.LogRedis).With("service_id", id, "address", r.Address), Metrics: a.metrics, Journal: a.journal,
	})
	if err != nil {
		return component{}, err
	}
	return component{value: inst, run: a.runner("redis", id, inst.Run), removed: a.removeService(id)}, nil
}

func (a *Agent) startSentinel(id string, s config.LocalSentinel, c *config.Config) (component, error) {
	tc, err := tlsConfig(s.TLS)
	if err != nil {
		return component{}, fmt.Errorf("sentinel %s: %w", s.Address, err)
	}
	si, err := discovery.NewSentinelInstance(discovery.SentinelInstanceOptions{
		Address: s.Address, Announce: s.Announce, Service: s.Service,
		Username: s.Username, Password: s.Password, TLSConfig: tc, Tick: c.Timing.Tick.D(),
		Registry: a.registrar,
		Logger:   a.opts.Logger.Named(telemetry.LogSentinel).With("service_id", id, "address", s.Address), Metrics: a.metrics, Journal: a.journal,
	})
	if err != nil {
		return component{}, err
	}
	return component{value: si, run: a.runner("sentinel", id, si.Run), removed: a.removeService(id)}, nil
}

// runner adapts a Run method to the group; an error other than the stop
// itself is logged and journaled, since nobody else waits for it.
func (a *Agent) runner(kind, id string, f func(context.Context) error) runFunc {
	return func(ctx context.Context) {
		if err := f(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("runner stopped", "kind", kind, "id", id, "error", err)
			a.journal.Add(telemetry.Event{Kind: telemetry.KindAgent, Type: "runner-failed", Subject: id, Detail: err.Error(), Level: telemetry.LevelError})
		}
	}
}

// heartbeat is the agent's own service, whose TTL check the checks of every
// service it registers alias (see discovery.RegistrarOptions.Heartbeat). Its
// ID holds the node name and the HTTP port, so that two agents beside one
// Consul agent (one per role on a host, or tests) do not share it.
func heartbeat(c *config.Config) discovery.Service {
	meta := map[string]string{"version": buildinfo.Version}
	if _, _, err := net.SplitHostPort(c.HTTP.Address); err == nil {
		meta["http"] = c.HTTP.Address
	}
	return discovery.Service{ID: heartbeatID(c.NodeName, c.HTTP.Address), Name: HeartbeatService, Meta: meta}
}

// heartbeatID is the heartbeat's service ID of the agent named node whose
// status API is httpAddr: redis-consul-agent-<node>-<http port>.
func heartbeatID(node, httpAddr string) string {
	addr := node
	if _, port, err := net.SplitHostPort(httpAddr); err == nil {
		addr = net.JoinHostPort(node, port)
	}
	return consulname.ServiceID(HeartbeatService, addr)
}

// HeartbeatService is the Consul service name of the agents themselves.
const HeartbeatService = "redis-consul-agent"
