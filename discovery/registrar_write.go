package discovery

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/consul/api"

	// discovery still has its own backoff type (names.go) until the Monitor moves off it.
	ibackoff "github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// entry is one service: what the runner wants, what Consul holds as far as
// the Registrar knows, and the retry state of its writes. Its mutex
// serializes the writes for that service only, so a slow write does not
// hold up another service's failover.
type entry struct {
	mu sync.Mutex

	want wanted
	have held

	retry     retryState
	confirm   confirmState
	heartbeat bool // this is the heartbeat itself
	removed   bool
	// lapsed: a master registration whose liveness TTL ran out (see
	// markLapses); it is held critical until its owner has asked Lapsed
	// (lapseSeen) and then sent an Update.
	lapsed, lapseSeen bool
	view              atomic.Pointer[RegistrationStatus]
}

// wanted is what the runner asked for last.
type wanted struct {
	svc    Service
	health Health
}

// held is what Consul holds, as far as the Registrar knows. The zero value
// means unknown: the next sync registers from scratch.
type held struct {
	registered bool // Consul holds svc as the definition
	svc        Service
	status     string // check status last written; "" when unknown
	output     string
	ttl        time.Duration // TTL of the check Consul holds
	aliased    bool          // Consul holds the alias check on the heartbeat too
	refreshed  time.Time     // last write that reset the TTL
	wrote      time.Time     // last write of any kind
}

// retryState schedules the next sync by Run and keeps the last error.
type retryState struct {
	backoff   ibackoff.Backoff
	dueAt     time.Time // when Run must sync this entry; zero: never
	lastErr   error
	lastErrAt time.Time
}

func (s *retryState) dueNow() { s.dueAt = time.Now() }

// checkID is the ID of the status check of service id.
func checkID(id string) string { return "service:" + id }

// needsWrite reports whether Consul lacks the definition or the status.
func (e *entry) needsWrite() bool {
	return !e.have.registered || !sameService(e.have.svc, e.want.svc) || e.have.status != e.want.health.Status
}

// syncLocked writes what Consul lacks for e, then records the result: the
// retry schedule, the error (logged once per distinct error) and the view
// for Status. refreshTTL writes the check even if nothing changed, to reset
// its TTL. Caller holds e.mu.
func (r *Registrar) syncLocked(ctx context.Context, e *entry, refreshTTL bool) error {
	if e.lapsed {
		return nil // held critical until a decision made since (Update)
	}
	err := r.sync(ctx, e, refreshTTL)
	if ctx.Err() == nil { // a stopping agent's cancelled write is no failure to report
		r.noteResult(e, err)
	}
	switch {
	case err != nil && e.needsWrite():
		// A change Consul lacks (a role change): DNS answers the old
		// state meanwhile, so retry at once, not with backoff.
		e.retry.backoff.Next()
		e.retry.dueAt = time.Now().Add(confirmEvery)
		r.poke()
	case err != nil:
		e.retry.dueAt = time.Now().Add(e.retry.backoff.Next())
		r.poke()
	case e.confirm.pending():
		e.retry.backoff.Reset()
		e.retry.dueAt = time.Now().Add(confirmEvery)
		r.poke()
	default:
		e.retry.backoff.Reset()
		e.retry.dueAt = time.Time{}
	}
	e.publishView()
	return err
}

// sync writes what Consul lacks for e, so that the status and its reason
// (the output) reach Consul's servers together, at once. Caller holds e.mu.
//
// Two facts of the Consul agent decide the order of the writes:
//   - it holds back an update of the output alone (same status) for up to
//     its check_update_interval (5m by default) before sending it to the
//     servers; a status change it sends at once, with the output;
//   - a registration keeps the status and output of a check that exists,
//     and sends the service with its checks as the agent holds them.
//
// So a status change is one TTL update carrying the output. A definition
// change (tags, meta) writes the check first and registers next: the
// registration carries the new tags, status and output in one sync, and
// when only the output changed the first write shows nowhere. A status and
// tag change is two writes, ordered so that the state between them never
// advertises a master the end state does not (see statusFirstIsUnsafe).
func (r *Registrar) sync(ctx context.Context, e *entry, refreshTTL bool) error {
	alias := ""
	if !e.heartbeat {
		alias = r.aliasTo()
	}
	if !e.have.registered {
		return r.registerFresh(ctx, e, alias)
	}
	h := e.want.health
	sameStatus := e.have.status == h.Status
	checkChanged := !sameStatus || e.have.output != h.Output
	if sameService(e.have.svc, e.want.svc) && e.have.aliased == (alias != "") {
		if !checkChanged && !refreshTTL {
			return nil
		}
		reason := sameStatus && newReason(e.have.output, h.Output)
		if err := r.updateTTL(ctx, e); err != nil {
			return r.lostCheck(ctx, e, alias, err)
		}
		if reason {
			// An output-only update waits in the Consul agent; a
			// registration sends it now.
			return r.register(ctx, e, alias)
		}
		return nil
	}
	if !sameStatus && statusFirstIsUnsafe(e.have.svc.Tags, e.want.svc.Tags, h.Status) {
		if err := r.register(ctx, e, alias); err != nil {
			return err
		}
		// A status change: Consul sends it at once, with its output.
		return r.updateTTL(ctx, e)
	}
	if checkChanged {
		if err := r.updateTTL(ctx, e); err != nil {
			return r.lostCheck(ctx, e, alias, err)
		}
	}
	return r.register(ctx, e, alias)
}

// lostCheck registers e from scratch when err says the Consul agent lost
// its check, and returns err otherwise.
func (r *Registrar) lostCheck(ctx context.Context, e *entry, alias string, err error) error {
	if !isNotFound(err) {
		return err
	}
	r.log.Warn("consul lost the check, registering again", "service_id", e.want.svc.ID)
	e.have = held{}
	return r.registerFresh(ctx, e, alias)
}

// registerFresh registers e when what Consul holds is unknown (the first
// write, or after a failure or a loss): the registration, the status and
// output (Consul may have kept an older check with its status), and, when
// there is an output, the registration again, which sends the output that
// Consul would otherwise hold back. Any failure starts over next time.
func (r *Registrar) registerFresh(ctx context.Context, e *entry, alias string) error {
	err := r.register(ctx, e, alias)
	if err == nil {
		err = r.updateTTL(ctx, e)
		if err != nil {
			err = fmt.Errorf("set check status after registering: %w", err)
		}
	}
	if err == nil && e.want.health.Output != "" {
		err = r.register(ctx, e, alias)
	}
	if err != nil {
		e.have = held{}
	}
	return err
}

// statusFirstIsUnsafe reports whether writing the new status before the
// new tags would show, between the two writes, a master the end state does
// not advertise: the old tags name a master, the new ones do not, and the
// new status is one DNS answers. Then the tags go first; the state between
// (new tags, old status) advertises no master.
func statusFirstIsUnsafe(oldTags, newTags []string, status string) bool {
	return namesMaster(oldTags) && !namesMaster(newTags) && status != api.HealthCritical
}

// namesMaster reports whether tags make DNS answer the service as a master.
func namesMaster(tags []string) bool {
	return slices.ContainsFunc(tags, func(t string) bool {
		return t == consulname.RoleMaster || strings.HasSuffix(t, "-"+consulname.RoleMaster)
	})
}

// register writes e.want with its TTL check (and the alias of the heartbeat
// when alias is set). Consul keeps the status and output of a check that
// exists, so the status is written by updateTTL, before or after.
func (r *Registrar) register(ctx context.Context, e *entry, alias string) error {
	s, h := e.want.svc, e.want.health
	ttl := r.opts.TTL
	if alias != "" {
		ttl = r.opts.StatusTTL
	}
	check := &api.AgentServiceCheck{
		CheckID:                        checkID(s.ID),
		Name:                           s.Name + " role and health (redis-consul-agent)",
		TTL:                            ttl.String(),
		Status:                         h.Status,
		Notes:                          "TTL refreshed by redis-consul-agent; the output says why.",
		DeregisterCriticalServiceAfter: r.opts.DeregisterCriticalAfter.String(),
	}
	if e.heartbeat {
		check.Name = "redis-consul-agent is running"
		check.Notes = "TTL refreshed by redis-consul-agent every third of it; the checks of its services alias this service."
	}
	reg := &api.AgentServiceRegistration{
		ID: s.ID, Name: s.Name, Tags: s.Tags, Meta: s.Meta, Address: s.Address, Port: s.Port,
		Checks: api.AgentServiceChecks{check},
	}
	if alias != "" {
		reg.Checks = append(reg.Checks, &api.AgentServiceCheck{
			CheckID:                        checkID(s.ID) + ":agent",
			Name:                           "redis-consul-agent is running",
			AliasService:                   alias,
			Status:                         api.HealthPassing,
			Notes:                          "Critical when the agent that keeps this service true stops refreshing its heartbeat service " + alias + ".",
			DeregisterCriticalServiceAfter: r.opts.DeregisterCriticalAfter.String(),
		})
	}
	// A registration of what Consul already holds only makes it send the
	// check's output: no news for the log or the journal.
	resend := e.have.registered && sameService(e.have.svc, s) && e.have.aliased == (alias != "")
	wctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	start := time.Now()
	err := r.agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(wctx))
	r.opts.Metrics.ConsulWrites.WithLabelValues("register").Inc()
	if err != nil {
		r.opts.Metrics.ConsulWriteFailures.WithLabelValues("register").Inc()
		// The write may or may not have happened: start over.
		e.have = held{}
		return r.explain("register", s, err)
	}
	now := time.Now()
	if !resend {
		e.confirm.need()
	}
	e.have.registered, e.have.svc = true, s
	e.have.ttl, e.have.aliased, e.have.refreshed, e.have.wrote = ttl, alias != "", now, now
	if resend {
		r.log.Debug("registered again to send the check output", "service_id", s.ID, "took", time.Since(start).Round(time.Microsecond))
		return nil
	}
	r.log.Info("registered", "service_id", s.ID, "tags", strings.Join(s.Tags, ","), "status", h.Status,
		"took", time.Since(start).Round(time.Microsecond))
	r.opts.Journal.Add(telemetry.Event{
		Kind: telemetry.KindConsul, Type: "register", Subject: s.ID,
		Detail: fmt.Sprintf("tags=[%s] status=%s", strings.Join(s.Tags, ","), h.Status),
	})
	return nil
}

// updateTTL writes the wanted status and output, which also resets the TTL.
func (r *Registrar) updateTTL(ctx context.Context, e *entry) error {
	id, h := e.want.svc.ID, e.want.health
	wctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	start := time.Now()
	err := r.agent.UpdateTTLOpts(checkID(id), truncateOutput(h.Output), h.Status, (&api.QueryOptions{}).WithContext(wctx))
	r.opts.Metrics.ConsulWrites.WithLabelValues("ttl").Inc()
	if err != nil {
		r.opts.Metrics.ConsulWriteFailures.WithLabelValues("ttl").Inc()
		return r.explain("update check of", e.want.svc, err)
	}
	prev := e.have.status
	now := time.Now()
	if prev != h.Status {
		e.confirm.need()
	}
	e.have.status, e.have.output, e.have.refreshed, e.have.wrote = h.Status, h.Output, now, now
	telemetry.SetOneOf(r.opts.Metrics.CheckStatus, []string{id}, h.Status,
		api.HealthPassing, api.HealthWarning, api.HealthCritical)
	if prev != h.Status {
		level := "info"
		if h.Status != api.HealthPassing {
			level = "warn"
		}
		r.log.Info("check status", "service_id", id, "status", h.Status, "output", h.Output,
			"took", time.Since(start).Round(time.Microsecond))
		r.opts.Journal.Add(telemetry.Event{
			Kind: telemetry.KindConsul, Type: "status", Subject: id,
			Detail: h.Status + ": " + h.Output, Level: level,
		})
	}
	return nil
}

// deregister removes s from the Consul agent; a service Consul does not
// know is no error.
func (r *Registrar) deregister(ctx context.Context, s Service) error {
	wctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	err := r.agent.ServiceDeregisterOpts(s.ID, (&api.QueryOptions{}).WithContext(wctx))
	r.opts.Metrics.ConsulWrites.WithLabelValues("deregister").Inc()
	r.opts.Metrics.CheckStatus.DeletePartialMatch(map[string]string{"service_id": s.ID})
	if err != nil && !isNotFound(err) {
		r.opts.Metrics.ConsulWriteFailures.WithLabelValues("deregister").Inc()
		return r.explain("deregister", s, err)
	}
	r.log.Info("deregistered", "service_id", s.ID)
	r.opts.Journal.Add(telemetry.Event{Kind: telemetry.KindConsul, Type: "deregister", Subject: s.ID})
	return nil
}

// publishView stores the snapshot Status returns, so that Status never
// waits for a write in flight. Caller holds e.mu.
func (e *entry) publishView() {
	v := &RegistrationStatus{
		Service:     e.want.svc,
		Status:      e.want.health.Status,
		Output:      e.want.health.Output,
		Registered:  e.have.registered && sameService(e.have.svc, e.want.svc) && e.have.status == e.want.health.Status,
		LastWrite:   e.have.wrote,
		LastErrorAt: e.retry.lastErrAt,
	}
	if e.retry.lastErr != nil {
		v.LastError = e.retry.lastErr.Error()
	}
	e.view.Store(v)
}

// truncateOutput keeps check output within what Consul stores by default
// (4 KiB), cutting on a rune boundary.
func truncateOutput(s string) string {
	const limit = 4096
	if len(s) <= limit {
		return s
	}
	for i := limit; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return ""
}

// sameService compares two definitions; nil and empty tags or meta are equal.
func sameService(a, b Service) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Address == b.Address && a.Port == b.Port &&
		slices.Equal(a.Tags, b.Tags) && maps.Equal(a.Meta, b.Meta)
}
