package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/agent/httpapi"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
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

// Cluster implements httpapi.Source: the whole cluster as Consul's health
// API reports it (through consulhealth, every instance whatever its
// status), and the recent failovers merged from this agent and its peers.
// A result the ACL token filtered is shown with what Consul did return and
// named in Cluster.Error, never taken for the whole cluster.
func (a *Agent) Cluster(ctx context.Context) status.Cluster {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	var hidden []string // services of which Consul hid instances
	var firstErr error
	fetch := func(services ...string) []consulhealth.Instance {
		var out []consulhealth.Instance
		for _, name := range services {
			res, err := consulhealth.Service(ctx, a.consul, name, consulhealth.Query{AllowStale: true})
			var fe *consulhealth.FilteredError
			switch {
			case errors.As(err, &fe):
				hidden = append(hidden, name)
				res = fe.Partial
			case err != nil && firstErr == nil:
				firstErr = err
			}
			out = append(out, res.Instances...)
		}
		return out
	}
	redis := fetch(cfg.RedisServices()...)
	sentinels := fetch(cfg.SentinelService())
	proxies := fetch(cfg.TwemproxyServices()...)
	views, truth := a.sentinelViews()
	c := httpapi.BuildCluster(redis, sentinels, proxies, truth, views)
	httpapi.AddFrontends(&c, fetch(haproxyServices(cfg)...), truth)
	self := nodeReport{Node: cfg.NodeName, Failovers: statusFailovers(a.journal.Failovers()), Events: statusEvents(a.journal.Events())}
	peers, who := a.peerReports(ctx, heartbeat(cfg).ID)
	c.Failovers, c.Peers = mergeStories(append([]nodeReport{self}, peers...)), who
	if firstErr != nil {
		c.Error = "consul: " + firstErr.Error()
	} else if len(hidden) > 0 {
		c.Error = fmt.Sprintf("consul: the ACL token may not read every instance of %s, so this view is incomplete (it needs service:read on them and node:read)",
			strings.Join(hidden, ", "))
	}
	return c
}

// haproxyServices are the service names of the HAProxy frontends: the
// default one, where other agents' frontends are, and every one this
// agent's config names.
func haproxyServices(cfg *config.Config) []string {
	out := []string{consulname.HAProxy}
	for _, h := range cfg.HAProxy {
		if h.Service != "" && !slices.Contains(out, h.Service) {
			out = append(out, h.Service)
		}
	}
	return out
}
