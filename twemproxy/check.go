package twemproxy

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// checkInput is what a health check needs from the loop.
type checkInput struct {
	gen        uint64
	runningSHA string
	lastErr    string
	wrongSince time.Time // the loop's: when a failed run left the proxy wrong
	services   map[string]consulreg.Service
}

// checkResult is a health check's findings.
type checkResult struct {
	stale    bool
	pools    []PoolStatus
	fileSHA  string
	services map[string]consulreg.Service
	err      error
}

// ServiceID is the Consul service ID of a pool: twemproxy-<node>-<pool>,
// unique per node and pool whatever the service is named, so that two
// proxies of one node never overwrite each other's registration.
func ServiceID(node, pool string) string {
	return consulname.PoolID(consulname.Twemproxy, node, pool)
}

// check pings every pool, compares its servers with the truth and updates
// the Consul checks: passing while it answers and matches, warning while it
// answers but disagrees with Sentinel, critical while it does not answer.
func (r *Runner) check(ctx context.Context, in checkInput) checkResult {
	res := checkResult{services: in.services}
	src, err := os.ReadFile(r.o.ConfigFile)
	var pools []Pool
	if err == nil {
		res.fileSHA = sha(src)
		pools, err = Pools(src)
	}
	if err != nil {
		res.err = err
		// Keep what was registered, but say why it cannot be vouched for.
		for id := range in.services {
			if r.gen.Load() != in.gen {
				res.stale = true
				return res
			}
			r.updateService(ctx, in.services[id], consulreg.Health{Status: consulreg.Critical, Output: fmt.Sprintf("config %s unreadable: %v", r.o.ConfigFile, err)})
		}
		return res
	}
	masters := r.o.Masters.Masters()
	statuses := make([]PoolStatus, len(pools))
	var wg sync.WaitGroup
	for i, p := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = r.poolHealth(ctx, p, masters, in, res.fileSHA)
		}()
	}
	wg.Wait()
	res.pools = statuses
	if r.gen.Load() != in.gen || ctx.Err() != nil {
		res.stale = true
		return res
	}
	want := map[string]consulreg.Service{}
	for i, p := range pools {
		svc, ok := r.service(p)
		if !ok {
			continue
		}
		statuses[i].ServiceID = svc.ID
		want[svc.ID] = svc
		if r.o.Registry != nil {
			r.updateService(ctx, svc, consulreg.Health{Status: statuses[i].Health, Output: statuses[i].Output})
		}
	}
	for id := range in.services {
		if _, ok := want[id]; !ok && r.o.Registry != nil {
			if err := r.o.Registry.Remove(ctx, id); err != nil {
				r.log.Warn("deregister pool", "service_id", id, "error", err)
				want[id] = in.services[id] // try again next time
				continue
			}
			deleteCheckStatus(r.o.Metrics, id)
		}
	}
	res.services = want
	return res
}

func (r *Runner) updateService(ctx context.Context, svc consulreg.Service, h consulreg.Health) {
	telemetry.SetOneOf(r.o.Metrics.CheckStatus, []string{svc.ID}, h.Status, consulreg.Passing, consulreg.Warning, consulreg.Critical)
	if r.o.Registry == nil {
		return
	}
	if err := r.o.Registry.Update(ctx, svc, h); err != nil {
		r.log.Warn("register pool", "service_id", svc.ID, "error", err)
	}
}

func deleteCheckStatus(m *telemetry.Metrics, id string) {
	for _, st := range []string{consulreg.Passing, consulreg.Warning, consulreg.Critical} {
		m.CheckStatus.DeleteLabelValues(id, st)
	}
}

// service is the Consul definition of a pool; unix-socket pools have no
// port to register.
func (r *Runner) service(p Pool) (consulreg.Service, bool) {
	host, port, ok := p.ListenHostPort()
	if !ok {
		return consulreg.Service{}, false
	}
	addr := r.o.Announce
	if addr == "" {
		addr = host
		if h := strings.Trim(host, "[]"); h == "0.0.0.0" || h == "::" {
			addr = ""
		}
	}
	return consulreg.Service{
		ID:      ServiceID(r.o.Node, p.Name),
		Name:    r.o.Service,
		Tags:    []string{p.Name},
		Meta:    map[string]string{consulname.MetaProxy: r.o.Name, consulname.MetaPool: p.Name},
		Address: addr,
		Port:    port,
	}, true
}

// poolHealth pings one pool and compares its servers with the truth.
func (r *Runner) poolHealth(ctx context.Context, p Pool, masters map[string]Master, in checkInput, fileSHA string) PoolStatus {
	ps := PoolStatus{Name: p.Name, Listen: p.Listen}
	var wrong, stale, unmanaged []string
	managed := 0
	for _, s := range p.Servers {
		ss := ServerStatus{Name: s.Name, Addr: s.Addr(), Weight: s.Weight, Matches: true}
		if m, ok := masters[s.Name]; !ok || s.Name == "" {
			unmanaged = append(unmanaged, cmp.Or(s.Name, s.Addr()))
		} else {
			managed++
			ss.Truth = addr.Normalize(m.Addr)
			ss.Matches = r.sameNode(ctx, m.Addr, ss.Addr)
			switch {
			case m.Stale:
				stale = append(stale, s.Name)
			case !ss.Matches:
				wrong = append(wrong, fmt.Sprintf("%s is %s but Sentinel says %s", s.Name, ss.Addr, ss.Truth))
				ps.WrongSince = earliest(ps.WrongSince, m.Since)
			}
		}
		ps.Servers = append(ps.Servers, ss)
	}
	if err := Ping(ctx, p, r.o.CheckTimeout); err != nil {
		ps.Health = consulreg.Critical
		ps.Output = fmt.Sprintf("pool %s does not answer PING at %s: %v", p.Name, p.Listen, err)
		return ps
	}
	switch {
	case len(wrong) > 0:
		ps.WrongSince = earliest(ps.WrongSince, in.wrongSince)
		if ps.WrongSince.IsZero() {
			ps.WrongSince = time.Now()
		}
		ps.Health = consulreg.Warning
		ps.Output = fmt.Sprintf("pool %s answers, but %s", p.Name, strings.Join(wrong, "; "))
		if in.lastErr != "" {
			ps.Output += " (" + in.lastErr + ")"
		} else {
			ps.Output += " (rewrite pending)"
		}
		// The time, not the duration: an output that changed every
		// check would be a Consul write every check.
		ps.Output += "; the proxy has been wrong since " + ps.WrongSince.UTC().Format("2006-01-02T15:04:05.000Z")
	case len(stale) > 0:
		ps.Health = consulreg.Warning
		ps.Output = fmt.Sprintf("pool %s answers, but the Sentinels have not confirmed %s lately; keeping the last known addresses", p.Name, strings.Join(stale, ", "))
	case in.runningSHA != "" && in.runningSHA != fileSHA:
		ps.Health = consulreg.Warning
		ps.Output = fmt.Sprintf("pool %s answers, but nutcracker has not loaded the current file yet", p.Name)
		if in.lastErr != "" {
			ps.Output += " (" + in.lastErr + ")"
		}
	default:
		ps.Health = consulreg.Passing
		ps.Output = fmt.Sprintf("pool %s answers PING at %s; %s", p.Name, p.Listen, following(managed, len(p.Servers), unmanaged))
	}
	return ps
}

// following says in words how many of a passing pool's servers follow
// Sentinel. The three cases differ in words, not only in numbers: the
// registrar pushes an output whose words changed at once, but one with new
// numbers only on the check's slow refresh, so "0 of 1" would stay in
// Consul long after the truth arrived.
func following(managed, total int, unmanaged []string) string {
	switch {
	case total > 0 && managed == total:
		return "every server is on its Sentinel master"
	case managed == 0:
		return "no server is named after a master the Sentinels report, so none follows Sentinel"
	}
	return fmt.Sprintf("%d of %d servers follow Sentinel; not named after a master the Sentinels report: %s",
		managed, total, strings.Join(unmanaged, ", "))
}

// applyCheck takes a check's findings into the status.
func (r *Runner) applyCheck(s *loop, res checkResult) {
	s.services = res.services
	if res.err != nil {
		r.log.Error("cannot read the twemproxy config for the health check", "error", res.err)
	}
	if res.stale {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.err == nil {
		r.status.Pools = res.pools
		r.status.ConfigSHA256 = res.fileSHA
	}
	r.status.RunningSHA256 = s.runningSHA
	if r.child != nil {
		r.status.PID = r.child.PID()
	}
}

// earliest is the earlier of two times, a zero time being none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

func cloneServices(m map[string]consulreg.Service) map[string]consulreg.Service {
	out := make(map[string]consulreg.Service, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
