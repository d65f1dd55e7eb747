package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Service is the definition of one service this agent registers. Everything
// in it is slow-changing: a change is a registration write that Consul syncs
// to its servers, so fast-changing facts belong in Health.Output.
type Service struct {
	ID      string
	Name    string
	Tags    []string
	Meta    map[string]string
	Address string
	Port    int
}

// Health is the state of a service's TTL check.
type Health struct {
	Status string // api.HealthPassing, api.HealthWarning or api.HealthCritical
	Output string // why, for operators
}

// RegistrarOptions configure a Registrar. Zero timings take the defaults.
type RegistrarOptions struct {
	Client *api.Client // required

	// TTL of the checks (default 10s). The Registrar refreshes each one every
	// TTL/3, so a killed agent's services go critical within about a TTL.
	// With a Heartbeat, only the heartbeat's check has this TTL.
	TTL time.Duration
	// Heartbeat, when its ID is set, is the agent's own service, whose TTL
	// check is the one refreshed every TTL/3. Every other service then
	// carries two checks: an alias of the heartbeat (critical within a TTL
	// of the agent's death, evaluated by the Consul agent from its local
	// state) and its status check with the long StatusTTL, written when the
	// status changes and refreshed at a third of StatusTTL. The idle cost is
	// then one request per TTL/3 for the whole agent, not one per service.
	// If Consul refuses the heartbeat (an ACL token without service:write
	// on its name), each check keeps its own short TTL, with a warning.
	Heartbeat Service
	// StatusTTL is the TTL of the status checks in heartbeat mode (default
	// 6m, at least TTL). The output of a check (offsets, lag) is written
	// with its refresh, so with a heartbeat it can be that old in Consul.
	StatusTTL time.Duration
	// DeregisterCriticalAfter lets Consul drop a service whose check stayed
	// critical that long, e.g. because its agent died (default 10m).
	DeregisterCriticalAfter time.Duration
	// ResyncInterval is how often the Registrar lists the agent's services
	// to re-register any the Consul agent lost (default 2s).
	ResyncInterval time.Duration
	// WriteTimeout bounds each Consul request (default 2s).
	WriteTimeout time.Duration
	// BackoffMin and BackoffMax bound the retry delay of a failing
	// registration (default 250ms and 10s).
	BackoffMin, BackoffMax time.Duration

	// Logger is used as is: pass the agent's logger.Named(telemetry.LogConsul).
	// Metrics and Journal are shared by the whole agent: nil Metrics means
	// private ones, a nil Journal records nothing.
	Logger  hclog.Logger
	Metrics *telemetry.Metrics
	Journal *telemetry.Journal
}

func (o *RegistrarOptions) setDefaults() {
	if o.TTL <= 0 {
		o.TTL = 10 * time.Second
	}
	if o.StatusTTL <= 0 {
		o.StatusTTL = 6 * time.Minute
	}
	o.StatusTTL = max(o.StatusTTL, o.TTL)
	if o.DeregisterCriticalAfter <= 0 {
		o.DeregisterCriticalAfter = 10 * time.Minute
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = 2 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 2 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 250 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(10*time.Second, o.BackoffMin)
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.Discard()
	}
}

// Registrar is the single owner of everything this agent registers in the
// local Consul agent. Runners hand it the desired state with Update; it
// writes only what changed, keeps the TTL checks alive, and repairs what the
// Consul agent lost. Safe for concurrent use.
//
// It registers through the agent API only (never the catalog), so Consul's
// anti-entropy keeps the tags, with one TTL check per service.
//
// A role change must be one write that changes tags and status together.
// Consul, though, keeps the status of a check that already exists when its
// service is registered again. So when both change, the Registrar registers
// the service with a new check ID, alternating between service:<id> and
// service:<id>:2, and lets Consul drop the old check (replace-existing-checks):
// the new check starts with the status of the definition. The check's
// output follows right after from Run; until then it is empty.
//
// The Consul agent syncs each write to its servers before it answers, so
// when Update returns the change is in the catalog and in DNS.
type Registrar struct {
	opts  RegistrarOptions
	agent *api.Agent
	log   hclog.Logger

	mu      sync.Mutex
	entries map[string]*entry

	// hb is the heartbeat service (nil without one); hbState says whether
	// Consul holds it, refused it, or is yet to be asked. Guarded by hb.mu.
	hb      *entry
	hbState heartbeatState

	wake chan struct{}
}

type heartbeatState int

const (
	heartbeatUnknown heartbeatState = iota // not registered (yet, or Consul lost it)
	heartbeatOK                            // Consul holds it: services alias it
	heartbeatRefused                       // the token may not register it: short TTLs
)

// entry is one service: what the runner wants and what Consul holds as far
// as the Registrar knows. Its mutex serializes the writes for that service
// only, so a slow write does not hold up another service's failover.
type entry struct {
	mu sync.Mutex

	want       Service
	wantHealth Health

	registered bool // Consul holds `have` as the definition
	have       Service
	checkID    string // the check Consul holds; "" when unknown
	sentStatus string // check status last written; "" when unknown
	sentOutput string
	ttl        time.Duration // TTL of the check Consul holds
	aliased    bool          // Consul holds the alias check on the heartbeat too
	heartbeat  bool          // this is the heartbeat itself
	refreshed  time.Time     // last write that reset the TTL

	removed bool
	view    atomic.Pointer[RegistrationStatus]

	retry     backoff
	dueAt     time.Time // when Run must sync this entry (a retry, or the output of a new check); zero: never
	lastErr   error
	lastWrite time.Time
}

// NewRegistrar returns a Registrar; call Run to keep its registrations alive.
func NewRegistrar(o RegistrarOptions) (*Registrar, error) {
	if o.Client == nil {
		return nil, errors.New("registrar: consul client is required")
	}
	if o.TTL != 0 && o.TTL < time.Second {
		return nil, fmt.Errorf("registrar: check TTL %s is below 1s", o.TTL)
	}
	o.setDefaults()
	r := &Registrar{
		opts:    o,
		agent:   o.Client.Agent(),
		log:     o.Logger,
		entries: make(map[string]*entry),
		wake:    make(chan struct{}, 1),
	}
	if o.Heartbeat.ID != "" {
		if o.Heartbeat.Name == "" {
			return nil, fmt.Errorf("registrar: heartbeat %q has no service name", o.Heartbeat.ID)
		}
		r.hb = &entry{
			heartbeat: true, want: o.Heartbeat,
			wantHealth: Health{Status: api.HealthPassing, Output: "redis-consul-agent is running; the checks of its services alias this one"},
		}
	}
	return r, nil
}

// aliasTo makes sure Consul holds the heartbeat, registering it if need be,
// and returns its service ID, or "" when the services must keep their own
// short TTLs (no heartbeat, refused, or Consul unreachable for now).
func (r *Registrar) aliasTo(ctx context.Context) string {
	if r.hb == nil {
		return ""
	}
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	switch r.hbState {
	case heartbeatOK:
		return r.hb.want.ID
	case heartbeatRefused:
		return ""
	}
	if err := r.register(ctx, r.hb); err != nil {
		var se api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusForbidden {
			r.hbState = heartbeatRefused
			r.log.Warn("consul refused the agent's heartbeat service: each check keeps its own TTL, one request per service every TTL/3; grant service:write on it to save them",
				"service", r.hb.want.Name, "error", err)
		}
		return ""
	}
	// A heartbeat check that outlived a previous run keeps its status
	// (critical once its TTL ran out): set it passing before any alias
	// follows it.
	if err := r.updateTTL(ctx, r.hb); err != nil {
		r.hb.registered, r.hb.checkID = false, ""
		return ""
	}
	r.hbState = heartbeatOK
	return r.hb.want.ID
}

// refreshHeartbeat resets the heartbeat's TTL. It returns false when Consul
// lost it (the Consul agent restarted without state): the caller then
// re-registers everything, the heartbeat first.
func (r *Registrar) refreshHeartbeat(ctx context.Context) bool {
	if r.hb == nil {
		return true
	}
	r.hb.mu.Lock()
	defer r.hb.mu.Unlock()
	if r.hbState != heartbeatOK {
		return r.hbState == heartbeatRefused
	}
	err := r.updateTTL(ctx, r.hb)
	if isNotFound(err) {
		r.log.Warn("consul lost the agent's heartbeat, registering everything again", "service_id", r.hb.want.ID)
		r.hb.registered, r.hb.checkID, r.hbState = false, "", heartbeatUnknown
		return false
	}
	if err != nil {
		r.log.Debug("refresh heartbeat", "error", err)
	}
	return true
}

// checkIDs are the two IDs the check of service id alternates between.
func checkIDs(id string) (primary, alternate string) {
	return "service:" + id, "service:" + id + ":2"
}

// Update makes Consul hold svc with health h. A changed definition (name,
// tags, meta, address, port) or check status is written before Update
// returns, in one local HTTP write (see Registrar): a failover reaches Consul
// within milliseconds. A change of the output alone is not written now: it
// rides on the next TTL refresh, so facts that change every second (offsets,
// lag) cost no extra writes. Nothing changed: no write.
//
// On error the desired state is kept and Run retries it with backoff.
func (r *Registrar) Update(ctx context.Context, svc Service, h Health) error {
	if svc.ID == "" || svc.Name == "" {
		return fmt.Errorf("register %q: service ID and name are required", svc.ID)
	}
	switch h.Status {
	case api.HealthPassing, api.HealthWarning, api.HealthCritical:
	default:
		return fmt.Errorf("register %s: invalid check status %q", svc.ID, h.Status)
	}
	svc.Tags = slices.Clone(svc.Tags)
	svc.Meta = maps.Clone(svc.Meta)

	r.mu.Lock()
	e := r.entries[svc.ID]
	if e == nil {
		e = &entry{retry: backoff{min: r.opts.BackoffMin, max: r.opts.BackoffMax}}
		r.entries[svc.ID] = e
	}
	r.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed {
		// Lost a race with Remove; the caller will come back if it still
		// wants the service.
		return fmt.Errorf("register %s: service was removed", svc.ID)
	}
	e.want, e.wantHealth = svc, h
	if !e.needsWrite() {
		e.publishView()
		return nil
	}
	return r.syncLocked(ctx, e, true)
}

// syncLocked writes what Consul lacks for e, then records the result: the
// retry schedule, the error (logged once per distinct error) and the view
// for Status. Caller holds e.mu.
func (r *Registrar) syncLocked(ctx context.Context, e *entry, urgent bool) error {
	err := r.sync(ctx, e, urgent)
	if ctx.Err() == nil { // a stopping agent's cancelled write is no failure to report
		r.noteResult(e, err)
	}
	r.afterSync(e, err)
	e.publishView()
	return err
}

// publishView stores the snapshot Status returns, so that Status never
// waits for a write in flight. Caller holds e.mu.
func (e *entry) publishView() {
	v := &RegistrationStatus{
		Service:    e.want,
		Status:     e.wantHealth.Status,
		Output:     e.wantHealth.Output,
		Registered: e.registered && sameService(e.have, e.want) && e.sentStatus == e.wantHealth.Status,
		LastWrite:  e.lastWrite,
	}
	if e.lastErr != nil {
		v.LastError = e.lastErr.Error()
	}
	e.view.Store(v)
}

// needsWrite reports whether Consul lacks the definition or the status.
func (e *entry) needsWrite() bool {
	return !e.registered || !sameService(e.have, e.want) || e.sentStatus != e.wantHealth.Status
}

// afterSync schedules the next sync of e by Run: after a failed write a
// retry with backoff; after a registration that left the output behind, at
// once; otherwise none. Caller holds e.mu.
func (r *Registrar) afterSync(e *entry, err error) {
	switch {
	case err != nil:
		e.dueAt = time.Now().Add(e.retry.next())
	case e.sentOutput != e.wantHealth.Output:
		e.retry.reset()
		e.dueAt = time.Now()
	default:
		e.retry.reset()
		e.dueAt = time.Time{}
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// sync writes what Consul lacks for e. Caller holds e.mu.
//
// urgent is Update's path: it writes what DNS and the health API show (tags
// and status) and leaves the output of a new check to Run, so that a
// failover costs one write. Otherwise the output is written too.
func (r *Registrar) sync(ctx context.Context, e *entry, urgent bool) error {
	if e.registered && e.aliased != (r.aliasTo(ctx) != "") {
		// The heartbeat came (or went): register again with the checks
		// that go with it.
		e.registered = false
	}
	if e.registered && sameService(e.have, e.want) {
		if urgent && e.sentStatus == e.wantHealth.Status {
			return nil
		}
		err := r.updateTTL(ctx, e)
		if !isNotFound(err) {
			return err
		}
		r.log.Warn("consul lost the check, registering again", "service_id", e.want.ID)
		e.registered, e.checkID = false, ""
	}
	if err := r.register(ctx, e); err != nil {
		return err
	}
	if e.sentStatus == e.wantHealth.Status && (urgent || e.sentOutput == e.wantHealth.Output) {
		return nil
	}
	if err := r.updateTTL(ctx, e); err != nil {
		return fmt.Errorf("set check status after registering: %w", err)
	}
	return nil
}

// register writes e.want with its TTL check. When the Registrar knows the
// check Consul holds and the status must change, the check gets the other
// ID: Consul creates it with the wanted status and drops the old one, in one
// write. Otherwise the check keeps its ID (and Consul its status; sync
// writes the status next when it is unknown).
func (r *Registrar) register(ctx context.Context, e *entry) error {
	s := e.want
	primary, alternate := checkIDs(s.ID)
	checkID, fresh := e.checkID, false
	switch {
	case !e.registered || checkID == "":
		checkID = primary
	case e.sentStatus != e.wantHealth.Status:
		fresh = true
		checkID = primary
		if e.checkID == primary {
			checkID = alternate
		}
	}
	ttl, alias := r.opts.TTL, ""
	if !e.heartbeat {
		if alias = r.aliasTo(ctx); alias != "" {
			ttl = r.opts.StatusTTL
		}
	}
	reg := &api.AgentServiceRegistration{
		ID:      s.ID,
		Name:    s.Name,
		Tags:    s.Tags,
		Meta:    s.Meta,
		Address: s.Address,
		Port:    s.Port,
		Checks: api.AgentServiceChecks{{
			CheckID:                        checkID,
			Name:                           s.Name + " role and health (redis-consul-agent)",
			TTL:                            ttl.String(),
			Status:                         e.wantHealth.Status,
			Notes:                          "TTL refreshed by redis-consul-agent; the output says why.",
			DeregisterCriticalServiceAfter: r.opts.DeregisterCriticalAfter.String(),
		}},
	}
	if e.heartbeat {
		reg.Checks[0].Name = "redis-consul-agent is running"
		reg.Checks[0].Notes = "TTL refreshed by redis-consul-agent every third of it; the checks of its services alias this service."
	}
	if alias != "" {
		reg.Checks = append(reg.Checks, &api.AgentServiceCheck{
			CheckID:                        "service:" + s.ID + ":agent",
			Name:                           "redis-consul-agent is running",
			AliasService:                   alias,
			Status:                         api.HealthPassing,
			Notes:                          "Critical when the agent that keeps this service true stops refreshing its heartbeat service " + alias + ".",
			DeregisterCriticalServiceAfter: r.opts.DeregisterCriticalAfter.String(),
		})
	}
	wctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	start := time.Now()
	err := r.agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(wctx))
	r.opts.Metrics.ConsulWrites.WithLabelValues("register").Inc()
	if err != nil {
		r.opts.Metrics.ConsulWriteFailures.WithLabelValues("register").Inc()
		// The write may or may not have happened: start over.
		e.registered, e.checkID = false, ""
		return r.explain("register", s, err)
	}
	wasRegistered := e.registered
	e.registered, e.have, e.checkID = true, s, checkID
	e.ttl, e.aliased, e.refreshed = ttl, alias != "", time.Now()
	switch {
	case fresh:
		e.sentStatus, e.sentOutput = e.wantHealth.Status, ""
		r.setCheckMetric(s.ID, e.wantHealth.Status)
	case !wasRegistered:
		// Whether the check existed, and with which status, is unknown:
		// sync writes the status and output right after.
		e.sentStatus, e.sentOutput = "", ""
	}
	e.lastWrite = time.Now()
	r.log.Info("registered", "service_id", s.ID, "tags", strings.Join(s.Tags, ","), "status", e.wantHealth.Status,
		"took", time.Since(start).Round(time.Microsecond))
	r.opts.Journal.Add(telemetry.Event{
		Kind: telemetry.KindConsul, Type: "register", Subject: s.ID,
		Detail: fmt.Sprintf("tags=[%s] status=%s", strings.Join(s.Tags, ","), e.wantHealth.Status),
	})
	return nil
}

// updateTTL writes the wanted status and output, which also resets the TTL.
// An unknown check (the Consul agent lost it) leads to a registration.
func (r *Registrar) updateTTL(ctx context.Context, e *entry) error {
	id, h := e.want.ID, e.wantHealth
	wctx, cancel := context.WithTimeout(ctx, r.opts.WriteTimeout)
	defer cancel()
	start := time.Now()
	checkID := e.checkID
	if checkID == "" {
		checkID, _ = checkIDs(id)
	}
	err := r.agent.UpdateTTLOpts(checkID, truncateOutput(h.Output), h.Status, (&api.QueryOptions{}).WithContext(wctx))
	r.opts.Metrics.ConsulWrites.WithLabelValues("ttl").Inc()
	if err != nil {
		r.opts.Metrics.ConsulWriteFailures.WithLabelValues("ttl").Inc()
		return r.explain("update check of", e.want, err)
	}
	prev := e.sentStatus
	e.sentStatus, e.sentOutput = h.Status, h.Output
	e.lastWrite = time.Now()
	e.refreshed = e.lastWrite
	r.setCheckMetric(id, h.Status)
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

// setCheckMetric records the status Consul now holds for service id.
func (r *Registrar) setCheckMetric(id, status string) {
	telemetry.SetOneOf(r.opts.Metrics.CheckStatus, []string{id}, status,
		api.HealthPassing, api.HealthWarning, api.HealthCritical)
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

// explain turns a Consul error into one that says what was being done and,
// for an ACL denial, which right is probably missing.
func (r *Registrar) explain(op string, s Service, err error) error {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		return fmt.Errorf("%s %s: consul denied the request (ACL token lacks service:write on %q?): %w", op, s.ID, s.Name, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: consul did not answer within %s: %w", op, s.ID, r.opts.WriteTimeout, err)
	}
	return fmt.Errorf("%s %s: %w", op, s.ID, err)
}

// isNotFound reports whether err says the service or check is unknown to
// the Consul agent.
func isNotFound(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusNotFound || strings.Contains(strings.ToLower(se.Body), "unknown check") ||
			strings.Contains(se.Body, "does not have associated TTL")
	}
	return false
}

// Remove deregisters service id and forgets it, so that Run does not bring
// it back. If Consul cannot be reached the service is forgotten anyway: its
// TTL expires and Consul drops it after DeregisterCriticalAfter.
func (r *Registrar) Remove(ctx context.Context, id string) error {
	r.mu.Lock()
	e := r.entries[id]
	delete(r.entries, id)
	r.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.removed = true
	return r.deregister(ctx, e.want)
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

// DeregisterAll removes every service this Registrar registered, for a
// graceful stop. It tries them all and returns the errors joined.
func (r *Registrar) DeregisterAll(ctx context.Context) error {
	r.mu.Lock()
	ids := slices.Sorted(maps.Keys(r.entries))
	r.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if err := r.Remove(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	if r.hb != nil {
		r.hb.mu.Lock()
		defer r.hb.mu.Unlock()
		if r.hbState == heartbeatOK {
			// Last, so that no service's alias goes critical before the
			// service itself is gone.
			if err := r.deregister(ctx, r.hb.want); err != nil {
				errs = append(errs, err)
			}
			r.hbState, r.hb.registered = heartbeatUnknown, false
		}
	}
	return errors.Join(errs...)
}

// RegistrationStatus is a snapshot of one service for the status API.
type RegistrationStatus struct {
	Service
	Status     string
	Output     string
	Registered bool // Consul holds the definition and status, as far as the agent knows
	LastWrite  time.Time
	LastError  string
}

// Status returns every service this Registrar owns, sorted by ID.
func (r *Registrar) Status() []RegistrationStatus {
	r.mu.Lock()
	es := make([]*entry, 0, len(r.entries))
	for _, e := range r.entries {
		es = append(es, e)
	}
	r.mu.Unlock()
	out := make([]RegistrationStatus, 0, len(es))
	for _, e := range es {
		if v := e.view.Load(); v != nil {
			out = append(out, *v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Run keeps the registrations alive until ctx is done: it refreshes every
// TTL check each TTL/3 (carrying the latest output), re-registers services
// the Consul agent lost (checked every ResyncInterval) and retries failed
// writes with capped exponential backoff. It returns nil when ctx is done;
// deregistering is left to the owner (DeregisterAll), which knows whether
// this is a stop or a restart.
func (r *Registrar) Run(ctx context.Context) error {
	refresh := time.NewTicker(r.opts.TTL / 3)
	defer refresh.Stop()
	resync := time.NewTicker(r.opts.ResyncInterval)
	defer resync.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-refresh.C:
			r.refresh(ctx)
		case <-resync.C:
			r.resync(ctx)
		case <-retry.C:
		case <-r.wake:
		}
		next := r.retryDue(ctx)
		retry.Stop()
		if !next.IsZero() {
			retry.Reset(max(time.Until(next), time.Millisecond))
		}
	}
}

// snapshot returns the entries, so that no write happens under r.mu.
func (r *Registrar) snapshot() []*entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	es := make([]*entry, 0, len(r.entries))
	for _, id := range slices.Sorted(maps.Keys(r.entries)) {
		es = append(es, r.entries[id])
	}
	return es
}

// refresh resets the heartbeat's TTL and every check TTL that would expire
// before the next tick, writing the latest output with it. If Consul lost
// the heartbeat it lost everything: all is registered again.
func (r *Registrar) refresh(ctx context.Context) {
	lost := !r.refreshHeartbeat(ctx)
	tick := r.opts.TTL / 3
	for _, e := range r.snapshot() {
		if ctx.Err() != nil {
			return
		}
		e.mu.Lock()
		if lost {
			e.registered, e.checkID = false, ""
		}
		due := !e.registered || time.Since(e.refreshed)+tick > e.ttl/3 || newReason(e.sentOutput, e.wantHealth.Output)
		if !e.removed && e.dueAt.IsZero() && due {
			_ = r.syncLocked(ctx, e, false)
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

// retryDue syncs the entries that are due (a retry whose backoff has passed,
// or the output of a new check) and returns the earliest pending due time
// (zero if none).
func (r *Registrar) retryDue(ctx context.Context) time.Time {
	var next time.Time
	for _, e := range r.snapshot() {
		if ctx.Err() != nil {
			return time.Time{}
		}
		e.mu.Lock()
		if !e.removed && !e.dueAt.IsZero() {
			if !time.Now().Before(e.dueAt) {
				_ = r.syncLocked(ctx, e, false)
			}
			if !e.dueAt.IsZero() && (next.IsZero() || e.dueAt.Before(next)) {
				next = e.dueAt
			}
		}
		e.mu.Unlock()
	}
	return next
}

// noteResult logs a failure once per distinct error and a recovery once.
// Caller holds e.mu.
func (r *Registrar) noteResult(e *entry, err error) {
	switch {
	case err != nil && (e.lastErr == nil || e.lastErr.Error() != err.Error()):
		r.log.Error("consul write failed", "service_id", e.want.ID, "error", err)
		r.opts.Journal.Add(telemetry.Event{
			Kind: telemetry.KindConsul, Type: "error", Subject: e.want.ID, Detail: err.Error(), Level: "error",
		})
	case err == nil && e.lastErr != nil:
		r.log.Info("consul write recovered", "service_id", e.want.ID)
	}
	e.lastErr = err
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
	if r.hb != nil {
		r.hb.mu.Lock()
		if _, ok := services[r.hb.want.ID]; r.hbState == heartbeatOK && !ok && r.hb.lastWrite.Before(listed) {
			r.log.Warn("consul lost the agent's heartbeat, registering it again", "service_id", r.hb.want.ID)
			r.hb.registered, r.hb.checkID, r.hbState = false, "", heartbeatUnknown
		}
		r.hb.mu.Unlock()
	}
	for _, e := range es {
		e.mu.Lock()
		// An entry written since the listing started may be newer than the
		// listing: the next resync judges it.
		if !e.removed && e.registered && e.lastWrite.Before(listed) {
			got, ok := services[e.want.ID]
			if !ok || !sameAgentService(got, e.have) {
				if !ok {
					r.log.Warn("consul lost the registration, registering again", "service_id", e.want.ID)
				} else {
					r.log.Warn("registration differs in consul, registering again", "service_id", e.want.ID)
				}
				e.registered, e.checkID = false, ""
				_ = r.syncLocked(ctx, e, false)
			}
		}
		e.mu.Unlock()
	}
}

// sameService compares two definitions; nil and empty tags or meta are equal.
func sameService(a, b Service) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Address == b.Address && a.Port == b.Port &&
		slices.Equal(a.Tags, b.Tags) && maps.Equal(a.Meta, b.Meta)
}

// sameAgentService compares what the Consul agent holds with what we wrote.
func sameAgentService(got *api.AgentService, s Service) bool {
	return got.Service == s.Name && got.Address == s.Address && got.Port == s.Port &&
		slices.Equal(got.Tags, s.Tags) && maps.Equal(got.Meta, s.Meta)
}
