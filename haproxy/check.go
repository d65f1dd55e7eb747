package haproxy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// Frontend is one HAProxy frontend registered in Consul: what clients
// connect to. Its check covers the managed servers of Backends (all of them
// when empty).
type Frontend struct {
	Name string
	// Address is the host:port registered; empty registers no address or
	// port (the service still carries the check).
	Address  string
	Backends []string
}

// frontendHealth is the check of one frontend: critical while the runtime
// API does not answer or HAProxy lacks a managed server, warning while a
// server does not match the truth (or the truth is stale), passing when
// every server it covers matches.
func frontendHealth(f Frontend, verdicts []Verdict, apiErr error, runtimeAPI string) consulreg.Health {
	if apiErr != nil {
		return consulreg.Health{Status: consulreg.Critical, Output: fmt.Sprintf("HAProxy runtime API %s does not answer, so its servers cannot be checked or moved: %v", runtimeAPI, apiErr)}
	}
	var missing, wrong, ok []string
	for _, v := range verdicts {
		if !f.covers(v.Server) {
			continue
		}
		switch {
		case v.Missing:
			missing = append(missing, v.Problem)
		case !v.Matches:
			wrong = append(wrong, v.Problem)
		default:
			ok = append(ok, v.Server.Name()+" at "+v.Addr)
		}
	}
	switch {
	case len(missing) > 0:
		return consulreg.Health{Status: consulreg.Critical, Output: fmt.Sprintf("frontend %s: %s (fix the haproxy servers of the agent's config)", f.Name, strings.Join(missing, "; "))}
	case len(wrong) > 0:
		return consulreg.Health{Status: consulreg.Warning, Output: fmt.Sprintf("frontend %s: %s", f.Name, strings.Join(wrong, "; "))}
	}
	return consulreg.Health{Status: consulreg.Passing, Output: fmt.Sprintf("frontend %s: %d servers follow Sentinel: %s", f.Name, len(ok), strings.Join(ok, ", "))}
}

// covers reports whether frontend f's check covers server srv.
func (f Frontend) covers(srv Server) bool {
	return len(f.Backends) == 0 || slices.Contains(f.Backends, srv.Backend)
}

// service is the Consul definition of a frontend; its ID holds the entry's
// name and the frontend's, so two HAProxy entries of a node never share one.
// Its Meta names the servers it covers, the master name each follows and
// where HAProxy points it (consulname.FormatServers), so that any agent's
// /v1/cluster can tell whether the frontend follows the truth. The
// addresses change only when a server moves, so Meta stays slow-changing.
func (d *Driver) service(f Frontend, verdicts []Verdict) consulreg.Service {
	pool := d.o.Name
	if f.Name != d.o.Name {
		pool += "-" + f.Name
	}
	svc := consulreg.Service{
		ID:   consulname.PoolID(consulname.HAProxy, d.o.Node, pool),
		Name: d.o.Service,
		Tags: []string{f.Name},
		Meta: map[string]string{consulname.MetaProxy: d.o.Name, consulname.MetaPool: f.Name},
	}
	var servers []consulname.ProxyServer
	for _, v := range verdicts {
		if f.covers(v.Server) {
			servers = append(servers, consulname.ProxyServer{Name: v.Server.Name(), MasterName: v.Server.MasterName, Addr: v.Addr})
		}
	}
	maps.Copy(svc.Meta, consulname.FormatServers(servers))
	if host, port, err := addr.Split(f.Address); err == nil {
		svc.Address, svc.Port = host, port
		if host == "0.0.0.0" || host == "::" {
			svc.Address = ""
		}
	}
	return svc
}

// registration is one frontend as the reporter should write it.
type registration struct {
	svc consulreg.Service
	h   consulreg.Health
}

// reporter writes the frontends' registrations to Consul in its own
// goroutine, so that a slow Consul never delays a move in HAProxy. It takes
// the latest set from a mailbox (older sets are replaced, not queued) and
// deregisters everything it registered when ctx ends.
type reporter struct {
	reg     consulreg.Registry
	log     hclog.Logger
	metrics *Metrics
	mailbox chan map[string]registration
	done    chan struct{}
}

func newReporter(reg consulreg.Registry, log hclog.Logger, m *Metrics) *reporter {
	return &reporter{reg: reg, log: log, metrics: m, mailbox: make(chan map[string]registration, 1), done: make(chan struct{})}
}

// post replaces what waits in the mailbox with want.
func (r *reporter) post(want map[string]registration) {
	for {
		select {
		case r.mailbox <- want:
			return
		default:
		}
		select {
		case <-r.mailbox:
		default:
		}
	}
}

func (r *reporter) run(ctx context.Context) {
	defer close(r.done)
	registered := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			for id := range registered {
				rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if err := r.reg.Remove(rctx, id); err != nil {
					r.log.Warn("deregister frontend", "service_id", id, "error", err)
				}
				cancel()
				r.metrics.deleteCheck(id)
			}
			return
		case want := <-r.mailbox:
			for id, g := range want {
				r.metrics.setCheck(id, g.h.Status)
				if err := r.reg.Update(ctx, g.svc, g.h); err != nil {
					r.log.Warn("register frontend", "service_id", id, "error", err)
				}
				registered[id] = true
			}
			for id := range registered {
				if _, ok := want[id]; ok {
					continue
				}
				if err := r.reg.Remove(ctx, id); err != nil {
					r.log.Warn("deregister frontend", "service_id", id, "error", err)
					continue
				}
				delete(registered, id)
				r.metrics.deleteCheck(id)
			}
		}
	}
}
