package agent

import (
	"context"
	"fmt"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/haproxy"
)

// HAProxyServers turns a config entry's servers into the driver's.
func HAProxyServers(h config.HAProxy) []haproxy.Server {
	out := make([]haproxy.Server, 0, len(h.Servers))
	for _, s := range h.Servers {
		out = append(out, haproxy.Server{Backend: s.Backend, Server: s.Server, MasterName: s.MasterName})
	}
	return out
}

// applyHAProxy makes the running drivers match c's haproxy entries.
func (a *Agent) applyHAProxy(ctx context.Context, c *config.Config) {
	desired := map[string]any{}
	for _, h := range c.HAProxy {
		desired[h.Name] = h
	}
	a.report("haproxy", a.haproxies.sync(ctx, desired, func(name string, spec any) (component, error) {
		return a.startHAProxy(name, spec.(config.HAProxy), c)
	}))
}

func (a *Agent) startHAProxy(name string, h config.HAProxy, c *config.Config) (component, error) {
	if a.monitor == nil {
		return component{}, fmt.Errorf("haproxy %s: no Sentinels configured", name)
	}
	o := haproxy.Options{
		Name: h.Name, Node: c.NodeName, RuntimeAPI: h.RuntimeAPI, Servers: HAProxyServers(h), Service: h.Service,
		Truth: proxyTruth{a.monitor}, Registry: a.registrar,
		Timeout: h.Timeout.D(), ReconcileInterval: h.Reconcile.D(),
		Logger: a.opts.Logger, Metrics: a.haproxyMetrics, Journal: a.journal,
	}
	for _, f := range h.Frontends {
		o.Frontends = append(o.Frontends, haproxy.Frontend{Name: f.Name, Address: f.Address, Backends: f.Backends})
	}
	d, err := haproxy.New(o)
	if err != nil {
		return component{}, fmt.Errorf("haproxy %s: %w", name, err)
	}
	// The driver deregisters its frontends itself when its context ends,
	// on removal and on shutdown alike.
	return component{value: d, run: a.runner("haproxy", name, d.Run)}, nil
}

func (a *Agent) haproxyStatus() []status.HAProxyStatus {
	out := []status.HAProxyStatus{} // [] rather than null in the JSON
	for _, v := range a.haproxies.values() {
		st := v.(*haproxy.Driver).Status()
		hs := status.HAProxyStatus{
			Name: st.Name, RuntimeAPI: st.RuntimeAPI, Reachable: st.Reachable, LastReconcile: st.LastReconcile,
			Reconciles: st.Reconciles, Moves: st.Moves, LastError: st.LastError, LastErrorAt: st.LastErrorAt,
		}
		for _, s := range st.Servers {
			srv := status.HAProxyServer{
				Backend: s.Server.Backend, Server: s.Server.Server, MasterName: s.Server.MasterName, Addr: s.Addr,
				Matches: s.Matches, Ready: s.Ready, Up: s.Up, Stale: s.Stale, Missing: s.Missing, Why: s.Problem,
			}
			if !s.Matches {
				srv.Want = s.Truth
			}
			hs.Servers = append(hs.Servers, srv)
		}
		for _, f := range st.Frontends {
			hs.Frontends = append(hs.Frontends, status.HAProxyFrontend{
				Name: f.Name, Address: f.Address, ServiceID: f.ServiceID, Status: f.Health.Status, Why: f.Health.Output,
			})
		}
		if m := st.LastMove; m != nil {
			hs.LastMove = &status.HAProxyMove{At: m.At, Server: m.Server, From: m.From, To: m.To, Reaction: m.Reaction}
		}
		out = append(out, hs)
	}
	return out
}

// CheckHAProxy asks the runtime API of every haproxy entry whether the
// configured backends and servers exist, for `validate`: only the running
// HAProxy knows its names. problems name the key and the unknown name;
// notes say which runtime APIs did not answer, whose names are unchecked.
func CheckHAProxy(ctx context.Context, c *config.Config) (problems config.Problems, notes []string) {
	for i, h := range c.HAProxy {
		key := fmt.Sprintf("haproxy[%d]", i)
		client := &haproxy.Client{Addr: h.RuntimeAPI, Timeout: h.Timeout.D()}
		state, err := client.ShowServersState(ctx)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s (%s): backend and server names NOT checked: %v", key, h.Name, err))
			continue
		}
		unknown := haproxy.UnknownNames(HAProxyServers(h), state)
		for j := range h.Servers {
			if why, ok := unknown[j]; ok {
				problems = append(problems, fmt.Sprintf("%s.servers[%d]: %s/%s: %s (asked %s)", key, j, h.Servers[j].Backend, h.Servers[j].Server, why, h.RuntimeAPI))
			}
		}
		if len(unknown) == 0 {
			notes = append(notes, fmt.Sprintf("%s (%s): HAProxy at %s has every configured backend and server", key, h.Name, h.RuntimeAPI))
		}
	}
	return problems, notes
}
