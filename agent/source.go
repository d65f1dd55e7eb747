package agent

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo"
	"github.com/seed42ef8afe/redis-consul-agent/agent/httpapi"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// startHTTP listens at once, so a port clash fails the start rather than
// being logged later, and serves until ctx is done.
func (a *Agent) startHTTP(ctx context.Context) error {
	if a.cfg.HTTP.Address == "" {
		return nil
	}
	srv, err := httpapi.New(httpapi.Options{
		Addr: a.cfg.HTTP.Address, Source: a, Gatherer: a.registry,
		Logger: a.opts.Logger.Named(telemetry.LogHTTP),
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	go func() {
		if err := srv.Serve(ctx); err != nil {
			a.log.Error("http server stopped", "error", err)
		}
	}()
	return nil
}

// Snapshot implements httpapi.Source from the runners' own status.
func (a *Agent) Snapshot() status.Snapshot {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	s := status.Snapshot{
		Node: cfg.NodeName, Version: buildinfo.Version, StartedAt: a.started, Now: time.Now(),
		Events: a.journal.Events(), Failovers: a.journal.Failovers(),
	}
	for _, v := range a.redis.values() {
		st := v.(*discovery.Instance).Status()
		s.Instances = append(s.Instances, status.Instance{
			ServiceID: st.ServiceID, Service: cfg.RedisService(st.Announce), Address: st.Address, Announce: st.Announce,
			MasterName: st.MasterName, Role: st.Role, Status: st.Status, Why: st.Output, Since: st.Updated,
		})
	}
	for _, v := range a.sentinels.values() {
		st := v.(*discovery.SentinelInstance).Status()
		s.LocalSentinels = append(s.LocalSentinels, status.LocalSentinel{
			ServiceID: st.ServiceID, Address: st.Announce, Masters: st.Masters, Status: st.Status, Why: st.Output,
		})
	}
	s.Sentinels, s.Masters = a.sentinelViews()
	s.Proxies = a.proxyStatus()
	s.Consul = consulStatus(a.registrar.Status())
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
		sentinels = append(sentinels, status.Sentinel{Address: st.Addr, Up: st.LinkUp && st.Reachable, LastError: st.LastError, View: st.View})
	}
	var masters []status.Master
	for _, m := range a.monitor.Masters() {
		masters = append(masters, status.Master{Name: m.Name, Addr: m.Addr, Source: m.Source, Agree: m.Agree, Known: m.Total, Since: m.Since})
	}
	sort.Slice(masters, func(i, j int) bool { return masters[i].Name < masters[j].Name })
	return sentinels, masters
}

// Cluster implements httpapi.Source: the whole cluster as Consul's health
// API reports it, every instance whatever its status.
func (a *Agent) Cluster(ctx context.Context) status.Cluster {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	q := (&api.QueryOptions{AllowStale: true}).WithContext(ctx)
	// hidden lists the services of which Consul dropped instances the ACL
	// token may not read: an empty answer then does not mean "none".
	var hidden []string
	fetch := func(service string) ([]*api.ServiceEntry, error) {
		entries, meta, err := a.consul.Health().Service(service, "", false, q)
		if err == nil && meta != nil && meta.ResultsFilteredByACLs {
			hidden = append(hidden, service)
		}
		return entries, err
	}
	var redisEntries []*api.ServiceEntry
	var firstErr error
	for _, name := range cfg.RedisServices() {
		e, err := fetch(name)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		redisEntries = append(redisEntries, e...)
	}
	sentinelEntries, err := fetch(cfg.SentinelService())
	if err != nil && firstErr == nil {
		firstErr = err
	}
	var proxyEntries []*api.ServiceEntry
	for _, name := range cfg.TwemproxyServices() {
		e, err := fetch(name)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		proxyEntries = append(proxyEntries, e...)
	}
	views, truth := a.sentinelViews()
	c := httpapi.BuildCluster(redisEntries, sentinelEntries, proxyEntries, truth, views)
	if firstErr != nil {
		c.Error = "consul: " + firstErr.Error()
	} else if len(hidden) > 0 {
		c.Error = fmt.Sprintf("consul: the ACL token may not read every instance of %s, so this view is incomplete (it needs service:read on them and node:read)",
			strings.Join(hidden, ", "))
	}
	return c
}
