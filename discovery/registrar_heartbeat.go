package discovery

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/hashicorp/consul/api"
)

// heartbeat is the agent's own service, whose short TTL check the checks of
// every other service alias (see RegistrarOptions.Heartbeat). Its writes are
// made by Run's goroutine (and DeregisterAll) only: a service write reads
// its state and never waits for one of its writes.
type heartbeat struct {
	// io serializes the heartbeat's writes and guards e; it is held across
	// them. Taken before mu, never while an entry.mu is held.
	io sync.Mutex
	e  *entry

	// mu guards state and is never held across a write.
	mu    sync.Mutex
	state heartbeatState
}

type heartbeatState int

const (
	heartbeatUnknown heartbeatState = iota // not registered (yet, or Consul lost it)
	heartbeatOK                            // Consul holds it: services alias it
	heartbeatRefused                       // the token may not register it: short TTLs
)

func newHeartbeat(svc Service) *heartbeat {
	return &heartbeat{e: &entry{heartbeat: true, want: wanted{svc: svc, health: Health{
		Status: api.HealthPassing,
		Output: "redis-consul-agent is running; the checks of its services alias this one",
	}}}}
}

func (h *heartbeat) get() heartbeatState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

func (h *heartbeat) set(s heartbeatState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state = s
}

// aliasTo returns the heartbeat's service ID when Consul holds it, or ""
// when the services must keep their own short TTLs (no heartbeat, refused,
// or not registered yet: Run registers it, then the services again with
// the alias). It never writes and never waits for a write.
func (r *Registrar) aliasTo() string {
	if r.hb == nil || r.hb.get() != heartbeatOK {
		return ""
	}
	return r.hb.e.want.svc.ID
}

// ensureHeartbeat registers the heartbeat if Consul does not hold it. Once
// it does, every service registered without the alias is due again, to get
// it. Run's goroutine only; the caller holds no entry.mu.
func (r *Registrar) ensureHeartbeat(ctx context.Context) {
	if r.hb == nil || r.hb.get() != heartbeatUnknown {
		return
	}
	r.hb.io.Lock()
	defer r.hb.io.Unlock()
	e := r.hb.e
	// registerFresh also sets the status: a heartbeat check that outlived
	// a previous run keeps its status (critical once its TTL ran out), and
	// it must pass before any alias follows it.
	if err := r.registerFresh(ctx, e, ""); err != nil {
		var se api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusForbidden {
			r.hb.set(heartbeatRefused)
			r.log.Warn("consul refused the agent's heartbeat service: each check keeps its own TTL, one request per service every TTL/3; grant service:write on it to save them",
				"service", e.want.svc.Name, "error", err)
		} else {
			r.log.Debug("register heartbeat", "error", err)
		}
		return
	}
	r.hb.set(heartbeatOK)
	for _, s := range r.snapshot() {
		s.mu.Lock()
		if !s.removed && s.have.registered && !s.have.aliased {
			s.retry.dueNow()
		}
		s.mu.Unlock()
	}
	r.poke()
}

// refreshHeartbeat resets the heartbeat's TTL, registering it first if
// need be. It returns false when Consul lost it (the Consul agent restarted
// without state): the caller then re-registers everything.
func (r *Registrar) refreshHeartbeat(ctx context.Context) bool {
	if r.hb == nil {
		return true
	}
	switch r.hb.get() {
	case heartbeatRefused:
		return true
	case heartbeatUnknown:
		r.ensureHeartbeat(ctx)
		return true
	}
	r.hb.io.Lock()
	defer r.hb.io.Unlock()
	err := r.updateTTL(ctx, r.hb.e)
	if isNotFound(err) {
		r.log.Warn("consul lost the agent's heartbeat, registering everything again", "service_id", r.hb.e.want.svc.ID)
		r.hb.e.have = held{}
		r.hb.set(heartbeatUnknown)
		return false
	}
	if err != nil {
		r.log.Debug("refresh heartbeat", "error", err)
	}
	return true
}

// heartbeatLost marks the heartbeat unregistered when a listing that started
// at listedAt lacks it (and no write since could explain that).
func (r *Registrar) heartbeatLost(services map[string]*api.AgentService, listed func(*entry) bool) {
	if r.hb == nil || r.hb.get() != heartbeatOK {
		return
	}
	r.hb.io.Lock()
	defer r.hb.io.Unlock()
	if _, ok := services[r.hb.e.want.svc.ID]; !ok && listed(r.hb.e) {
		r.log.Warn("consul lost the agent's heartbeat, registering it again", "service_id", r.hb.e.want.svc.ID)
		r.hb.e.have = held{}
		r.hb.set(heartbeatUnknown)
	}
}

// removeHeartbeat deregisters the heartbeat, for a graceful stop.
func (r *Registrar) removeHeartbeat(ctx context.Context) error {
	if r.hb == nil {
		return nil
	}
	r.hb.io.Lock()
	defer r.hb.io.Unlock()
	if r.hb.get() != heartbeatOK {
		return nil
	}
	err := r.deregister(ctx, r.hb.e.want.svc)
	r.hb.e.have = held{}
	r.hb.set(heartbeatUnknown)
	return err
}
