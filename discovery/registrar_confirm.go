package discovery

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// A Consul agent answers a registration 200 before it reaches a server, and
// one that has no server (it has just restarted, or lost them all) keeps it
// back until its anti-entropy, staggered up to 3s after it finds one.
// Meanwhile a Consul agent that rejoins after being down through a failover
// lets the catalog answer the node's last registration, frozen since it
// died (the old master, passing), and its first sync may push the same
// registration restored from its data dir. So each change of definition or
// status is read back from the catalog, and written again every
// confirmEvery until the catalog holds it: the write that makes the Consul
// agent sync at once is then usually in before the node is alive again.

// confirmEvery is how often a change the catalog does not hold yet is read
// back and written again (and a change Consul refused retried).
const confirmEvery = 25 * time.Millisecond

// confirmFor bounds how long one change is read back.
const confirmFor = 30 * time.Second

// confirmState says since when a written change has not been seen in the
// catalog; zero: nothing to confirm.
type confirmState struct{ since time.Time }

func (c *confirmState) need() {
	if c.since.IsZero() {
		c.since = time.Now()
	}
}

func (c *confirmState) pending() bool { return !c.since.IsZero() }

// syncOrConfirm is Run's sync of a due entry: the write it lacks, or else
// the read-back of a change it wrote. Caller holds e.mu.
func (r *Registrar) syncOrConfirm(ctx context.Context, e *entry) {
	if e.confirm.pending() && !e.needsWrite() && e.have.output == e.want.health.Output {
		if r.confirmInCatalog(ctx, e) {
			r.afterConfirm(e)
			return
		}
	}
	_ = r.syncLocked(ctx, e, false)
}

// afterConfirm schedules the next read-back, or none. Caller holds e.mu.
func (r *Registrar) afterConfirm(e *entry) {
	if e.confirm.pending() {
		e.retry.dueAt = time.Now().Add(confirmEvery)
		r.poke()
		return
	}
	e.retry.dueAt = time.Time{}
}

// confirmInCatalog reads e's service from the catalog (a consistent read
// through the local Consul agent). It returns true when no write is needed
// now: the catalog holds what was written (confirmed), the read failed (try
// again later) or the read-back has gone on too long. When the catalog holds
// something else it forgets what Consul holds, so that the sync that follows
// registers again, which makes the Consul agent sync at once. Caller holds
// e.mu.
func (r *Registrar) confirmInCatalog(ctx context.Context, e *entry) bool {
	if time.Since(e.confirm.since) > confirmFor {
		r.log.Warn("the catalog still does not show the registration the Consul agent accepted; no longer reading it back",
			"service_id", e.want.svc.ID, "for", confirmFor)
		e.confirm = confirmState{}
		return true
	}
	qctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	q := (&api.QueryOptions{RequireConsistent: true, Filter: fmt.Sprintf("Service.ID == %q", e.have.svc.ID)}).WithContext(qctx)
	entries, meta, err := r.opts.Client.Health().Service(e.have.svc.Name, "", false, q)
	if err != nil {
		r.log.Debug("read the registration back from the catalog", "service_id", e.want.svc.ID, "error", err)
		return true
	}
	if meta != nil && meta.ResultsFilteredByACLs {
		// A token that may not read its own registration back cannot tell
		// "not synced yet" from "hidden": writing again every confirmEvery
		// would be a storm of writes for nothing. Stop reading back.
		r.log.Debug("the ACL token may not read the registration back; not confirming it", "service_id", e.want.svc.ID)
		e.confirm = confirmState{}
		return true
	}
	for _, se := range entries {
		if !sameAgentService(se.Service, e.have.svc) {
			continue
		}
		for _, c := range se.Checks {
			if c.CheckID == checkID(e.have.svc.ID) && c.Status == e.have.status {
				r.log.Debug("registration seen in the catalog", "service_id", e.want.svc.ID,
					"took", time.Since(e.confirm.since).Round(time.Millisecond))
				e.confirm = confirmState{}
				return true
			}
		}
	}
	r.log.Warn("the catalog does not hold the registration the Consul agent accepted; writing it again", "service_id", e.want.svc.ID)
	e.have = held{}
	return false
}
