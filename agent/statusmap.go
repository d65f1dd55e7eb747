package agent

import (
	"sort"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// This file is the one mapping from the domain types (discovery,
// twemproxy, telemetry), which carry no wire tags, to the status contract
// (agent/status), which alone defines the JSON. A field renamed in a runner
// breaks the build here instead of silently changing what scripts read.

// Snapshot implements httpapi.Source from the runners' own status.
func (a *Agent) Snapshot() status.Snapshot {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	s := status.Snapshot{
		Node: cfg.NodeName, Version: buildinfo.Version, StartedAt: a.started, Now: time.Now(),
		Events: statusEvents(a.journal.Events()), Failovers: statusFailovers(a.journal.Failovers()),
	}
	for _, v := range a.redis.values() {
		s.Instances = append(s.Instances, statusInstance(v.(*discovery.Instance).Status(), cfg.RedisService))
	}
	for _, v := range a.sentinels.values() {
		s.LocalSentinels = append(s.LocalSentinels, statusLocalSentinel(v.(*discovery.SentinelInstance).Status()))
	}
	s.Sentinels, s.Masters = a.sentinelViews()
	for _, v := range a.proxies.values() {
		s.Proxies = append(s.Proxies, statusProxy(v.(*twemproxy.Runner).Status()))
	}
	s.Consul = consulStatus(a.registrar.Status())
	s.HAProxy = a.haproxyStatus()
	return s
}

// consulStatus sums up the registrar's view of its services.
func consulStatus(regs []discovery.RegistrationStatus) *status.Consul {
	c := &status.Consul{Services: len(regs)}
	for _, r := range regs {
		if r.Registered {
			c.Registered++
		} else {
			c.Unregistered = append(c.Unregistered, r.ID)
		}
		if r.LastErrorAt.After(c.LastErrorAt) {
			c.LastError, c.LastErrorAt, c.LastErrorService = r.LastError, r.LastErrorAt, r.ID
		}
	}
	return c
}

// sentinelViews is the Monitor's picture in the status contract's terms.
func (a *Agent) sentinelViews() ([]status.Sentinel, []status.Master) {
	if a.monitor == nil {
		return nil, nil
	}
	var sentinels []status.Sentinel
	for _, st := range a.monitor.Status() {
		sentinels = append(sentinels, statusSentinel(st))
	}
	var masters []status.Master
	for _, m := range a.monitor.Masters() {
		masters = append(masters, statusMaster(m))
	}
	sort.Slice(masters, func(i, j int) bool { return masters[i].Name < masters[j].Name })
	return sentinels, masters
}

// statusInstance maps a local Redis; service names the Consul service of
// its announce address.
func statusInstance(st discovery.InstanceStatus, service func(announce string) string) status.Instance {
	in := status.Instance{
		ServiceID: st.ServiceID, Service: service(st.Announce), Address: st.Address, Announce: st.Announce,
		MasterName: st.MasterName, Role: st.Role, Status: st.Status, Why: st.Output, Since: st.Updated,
	}
	if st.WritesPaused {
		in.WritePause = &status.WritePause{Since: st.PausedSince, Why: st.PauseWhy}
	}
	return in
}

func statusLocalSentinel(st discovery.SentinelInstanceStatus) status.LocalSentinel {
	return status.LocalSentinel{ServiceID: st.ServiceID, Address: st.Announce, Masters: st.Masters, Status: st.Status, Why: st.Output}
}

// statusSentinel maps one Sentinel link: up means subscribed and answering.
func statusSentinel(st discovery.SentinelStatus) status.Sentinel {
	return status.Sentinel{Address: st.Addr, Up: st.LinkUp && st.Reachable, LastError: st.LastError, View: st.View}
}

func statusMaster(m discovery.Master) status.Master {
	return status.Master{Name: m.Name, Addr: m.Addr, Source: m.Source, Agree: m.Agree, Total: m.Total, Since: m.Since}
}

func statusProxy(st twemproxy.Status) status.Proxy {
	p := status.Proxy{
		Name: st.Name, ConfigFile: st.ConfigFile, ConfigHash: st.ConfigSHA256, Mode: st.Mode,
		Restarts: st.Restarts, Rollbacks: st.Rollbacks, LastError: st.LastError,
		FailedRuns: st.Failures, WrongSince: st.WrongSince,
	}
	if !st.WrongSince.IsZero() {
		p.WrongFor = time.Since(st.WrongSince)
	}
	if lr := st.LastRestart; lr != nil {
		p.LastRestart = &status.Restart{At: lr.At, Duration: ms(lr.DurationMS), Result: lr.Result, Reason: lr.Reason}
		p.Blackout = ms(lr.BlackoutMS)
	}
	for _, pool := range st.Pools {
		ps := status.Pool{Name: pool.Name, Listen: pool.Listen, ServiceID: pool.ServiceID, Status: pool.Health, Why: pool.Output, WrongSince: pool.WrongSince}
		for _, s := range pool.Servers {
			srv := status.Server{Name: s.Name, Addr: s.Addr, Weight: s.Weight, Follows: s.Truth != "", Matches: s.Matches}
			if !s.Matches {
				srv.Want = s.Truth
			}
			ps.Servers = append(ps.Servers, srv)
		}
		p.Pools = append(p.Pools, ps)
	}
	return p
}

func statusEvents(evs []telemetry.Event) []status.Event {
	out := make([]status.Event, len(evs))
	for i, e := range evs {
		out[i] = status.Event{Time: e.Time, Kind: string(e.Kind), Type: e.Type, Subject: e.Subject, Detail: e.Detail, Level: e.Level}
	}
	return out
}

func statusFailovers(fs []telemetry.Failover) []status.Failover {
	out := make([]status.Failover, len(fs))
	for i, f := range fs {
		out[i] = status.Failover{Master: f.Master, From: f.From, To: f.To, At: f.At, ConsulAt: f.ConsulAt, TwemproxyAt: f.TwemproxyAt, HAProxyAt: f.HAProxyAt}
	}
	return out
}

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
