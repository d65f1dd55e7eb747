package discovery

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// A lapse: the agent did not refresh a master registration's liveness (the
// heartbeat it aliases, or its own TTL) in time, because the process was
// frozen or starved, and Consul turned it critical: DNS dropped the node,
// and the new master's agent may have taken the tag meanwhile. The
// registration Consul still holds says master, passing, as decided before
// the lapse, and the next heartbeat would bring it back as it was (found by
// the chaos campaign, seed 5: DNS answered two live masters for 557 ms
// after a frozen agent resumed). So, before the heartbeat is refreshed, the
// Registrar writes such a registration's own check critical, and writes
// nothing more for it until its owner, told by Lapsed, decides again.

// markLapses writes every lapsed master registration critical. It reports
// false when one of those writes failed: the heartbeat must not be
// refreshed then, or it would bring that registration back.
func (r *Registrar) markLapses(ctx context.Context) bool {
	hbLapsed, hbSince := r.heartbeatLapsed()
	ok := true
	for _, e := range r.snapshot() {
		e.mu.Lock()
		if e.removed || e.lapsed || !e.have.registered || e.have.svc.Meta[consulname.MetaRole] != consulname.RoleMaster {
			e.mu.Unlock()
			continue
		}
		since, ttl, lapsed := e.ownTTLLapsed()
		if e.have.aliased {
			lapsed, since, ttl = hbLapsed, hbSince, r.opts.TTL
		}
		if lapsed {
			if err := r.markLapsed(ctx, e, since, ttl); err != nil {
				r.log.Warn("could not mark a lapsed master registration critical; the heartbeat waits", "service_id", e.want.svc.ID, "error", err)
				ok = false
			}
		}
		e.mu.Unlock()
	}
	return ok
}

// ownTTLLapsed reports whether e is a master registration without the
// heartbeat's alias whose own TTL ran out, and since when it was refreshed.
// Caller holds e.mu.
func (e *entry) ownTTLLapsed() (since, ttl time.Duration, lapsed bool) {
	if e.heartbeat || e.lapsed || e.have.aliased || !e.have.registered || e.have.svc.Meta[consulname.MetaRole] != consulname.RoleMaster {
		return 0, 0, false
	}
	since = time.Since(e.have.refreshed)
	return since, e.have.ttl, since > e.have.ttl
}

// heartbeatLapsed reports whether Consul holds the heartbeat past its TTL
// (critical by now), and since when it was last refreshed.
func (r *Registrar) heartbeatLapsed() (bool, time.Duration) {
	if r.hb == nil || r.hb.get() != heartbeatOK {
		return false, 0
	}
	r.hb.io.Lock()
	defer r.hb.io.Unlock()
	h := r.hb.e.have
	since := time.Since(h.refreshed)
	return h.registered && since > h.ttl, since
}

// markLapsed writes e's check critical, saying why. Caller holds e.mu.
func (r *Registrar) markLapsed(ctx context.Context, e *entry, since, ttl time.Duration) error {
	id := e.want.svc.ID
	out := fmt.Sprintf("the agent did not refresh this registration for %s (TTL %s): Consul took the master tag away; it goes back only with a decision made since",
		since.Round(time.Millisecond), ttl)
	wctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	err := r.agent.UpdateTTLOpts(checkID(id), out, api.HealthCritical, (&api.QueryOptions{}).WithContext(wctx))
	r.opts.Metrics.ConsulWrites.WithLabelValues("ttl").Inc()
	switch {
	case isNotFound(err):
		// Consul lost it (its agent restarted without state): there is
		// nothing left to bring back, and it is registered again from
		// scratch, with the decision made since.
		e.have = held{}
	case err != nil:
		r.opts.Metrics.ConsulWriteFailures.WithLabelValues("ttl").Inc()
		return r.explain("update check of", e.want.svc, err)
	default:
		now := time.Now()
		e.have.status, e.have.output, e.have.refreshed, e.have.wrote = api.HealthCritical, out, now, now
	}
	e.lapsed, e.lapseSeen = true, false
	e.publishView()
	r.log.Warn("master registration lapsed: held critical until its owner decides again", "service_id", id,
		"not_refreshed_for", since.Round(time.Millisecond), "ttl", ttl)
	r.opts.Journal.Add(telemetry.Event{
		Kind: telemetry.KindConsul, Type: "lapsed", Subject: id, Level: "warn", Detail: out,
	})
	return nil
}

// Lapsed reports whether id is a lapsed master registration (markLapses),
// and marks the lapse as seen: the owner's next Update is written, and only
// that one ends the hold. An Update made before this call is not written,
// as its decision may predate the lapse.
func (r *Registrar) Lapsed(id string) bool {
	r.mu.Lock()
	e := r.entries[id]
	r.mu.Unlock()
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lapsed {
		e.lapseSeen = true
	}
	return e.lapsed
}
