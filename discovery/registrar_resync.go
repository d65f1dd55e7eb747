package discovery

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// refresh resets the heartbeat's TTL and every check TTL that would expire
// before the next tick, writing the latest output with it; a new reason goes
// out at once. If Consul lost the heartbeat it lost everything: all is
// registered again, the heartbeat first.
func (r *Registrar) refresh(ctx context.Context) {
	if !r.markLapses(ctx) {
		return
	}
	if !r.refreshHeartbeat(ctx) {
		r.ensureHeartbeat(ctx)
		for _, e := range r.snapshot() {
			e.mu.Lock()
			e.have = held{}
			e.mu.Unlock()
		}
	}
	tick := r.opts.TTL / 3
	for _, e := range r.snapshot() {
		if ctx.Err() != nil {
			return
		}
		e.mu.Lock()
		due := !e.have.registered || time.Since(e.have.refreshed)+tick > e.have.ttl/3 ||
			newReason(e.have.output, e.want.health.Output)
		if !e.removed && (e.retry.dueAt.IsZero() || e.confirm.pending()) && due {
			_ = r.syncLocked(ctx, e, true)
		}
		e.mu.Unlock()
	}
}

// newReason reports whether an output says something new in words, not
// only in numbers: offsets, counts and lag change all the time and wait for
// the status check's slow refresh; a new reason goes out on the next tick.
func newReason(sent, want string) bool {
	if sent == want {
		return false
	}
	words := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return '#'
			}
			return r
		}, s)
	}
	return words(sent) != words(want)
}

// retryDue syncs the entries that are due (a retry whose backoff has
// passed, or a service to register again with the heartbeat's alias) and
// returns the earliest pending due time (zero if none).
func (r *Registrar) retryDue(ctx context.Context) time.Time {
	var next time.Time
	for _, e := range r.snapshot() {
		if ctx.Err() != nil {
			return time.Time{}
		}
		e.mu.Lock()
		if !e.removed && !e.retry.dueAt.IsZero() {
			if !time.Now().Before(e.retry.dueAt) {
				r.syncOrConfirm(ctx, e)
			}
			if d := e.retry.dueAt; !d.IsZero() && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
		e.mu.Unlock()
	}
	return next
}

// resync lists the agent's services and re-registers ours that are missing
// or differ (the Consul agent restarted without state, or someone edited
// them).
func (r *Registrar) resync(ctx context.Context) {
	es := r.snapshot()
	if len(es) == 0 {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	listed := time.Now()
	services, err := r.agent.ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(qctx))
	if err != nil {
		r.log.Debug("list agent services", "error", err)
		return
	}
	// An entry written since the listing started may be newer than the
	// listing: the next resync judges it.
	before := func(e *entry) bool { return e.have.wrote.Before(listed) }
	r.heartbeatLost(services, before)
	r.ensureHeartbeat(ctx)
	for _, e := range es {
		e.mu.Lock()
		if !e.removed && e.have.registered && before(e) {
			got, ok := services[e.want.svc.ID]
			if !ok || !sameAgentService(got, e.have.svc) {
				if !ok {
					r.log.Warn("consul lost the registration, registering again", "service_id", e.want.svc.ID)
				} else {
					r.log.Warn("registration differs in consul, registering again", "service_id", e.want.svc.ID)
				}
				e.have = held{}
				_ = r.syncLocked(ctx, e, false)
			}
		}
		e.mu.Unlock()
	}
}

// sameAgentService compares what the Consul agent holds with what we wrote.
func sameAgentService(got *api.AgentService, s Service) bool {
	return got.Service == s.Name && got.Address == s.Address && got.Port == s.Port &&
		slices.Equal(got.Tags, s.Tags) && maps.Equal(got.Meta, s.Meta)
}
