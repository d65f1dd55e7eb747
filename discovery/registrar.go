package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"

	// discovery still has its own backoff type (names.go) until the Monitor moves off it.
	ibackoff "github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Service and Health are the registration of internal/consulreg, which the
// runners here and the proxy drivers hand to the Registrar; the Registrar
// satisfies their consulreg.Registry as it is.
type (
	Service = consulreg.Service
	Health  = consulreg.Health
)

var _ consulreg.Registry = (*Registrar)(nil)

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
	// 6m, at least TTL).
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
	// Metrics are required (telemetry.Discard() where nobody scrapes them);
	// a nil Journal records nothing.
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
}

// Registrar is the single owner of everything this agent registers in the
// local Consul agent. Runners hand it the desired state with Update; it
// writes only what changed, keeps the TTL checks alive, and repairs what the
// Consul agent lost. Safe for concurrent use.
//
// It registers through the agent API only (never the catalog), so Consul's
// anti-entropy keeps the tags. How a change is written so that status and
// reason reach Consul's servers together is in write.go (sync).
//
// # Who owns what (one lock order)
//
// The state is guarded by mutexes, not owned by a goroutine: Update is
// called from many runners and must write at once, and a Consul write of
// one service must never hold up another service's failover. An actor
// would need a write pool beside it to give the same guarantee. The locks,
// in the only order they are taken:
//
//  1. r.mu guards the entries map only; it is never held across a write
//     nor while taking another lock.
//  2. entry.mu serializes the writes of one service and guards its fields.
//     Update waits on it only behind a write of the same service.
//  3. r.hb.io serializes the heartbeat's writes and guards its entry. Only
//     Run's goroutine and DeregisterAll take it, never while holding an
//     entry.mu: no service write ever waits for a heartbeat write.
//  4. r.hb.mu guards the heartbeat's state word; it is never held across a
//     write, so reading it (every sync does) never waits.
//
// A Consul agent that knows a server syncs each write to it before it
// answers, so when Update returns the change is in the catalog and in DNS.
// One without a server answers 200 all the same: each change is therefore
// read back from the catalog until it is there (registrar_confirm.go).
type Registrar struct {
	opts  RegistrarOptions
	agent *api.Agent
	log   hclog.Logger

	mu      sync.Mutex
	entries map[string]*entry

	hb *heartbeat // nil without one

	wake chan struct{}
}

// NewRegistrar returns a Registrar; call Run to keep its registrations alive.
func NewRegistrar(o RegistrarOptions) (*Registrar, error) {
	if o.Client == nil {
		return nil, errors.New("registrar: consul client is required")
	}
	if o.Metrics == nil {
		return nil, errors.New("registrar: metrics are required (telemetry.Discard() where nobody scrapes them)")
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
		r.hb = newHeartbeat(o.Heartbeat)
	}
	return r, nil
}

// Update makes Consul hold svc with health h. A changed definition (name,
// tags, meta, address, port) or check status is written before Update
// returns, with the output: a failover reaches Consul within milliseconds,
// its reason with it. A change of the output alone is not written now: it
// rides on the next TTL refresh, so facts that change every second (offsets,
// lag) cost no extra writes. Nothing changed: no write. Update never waits
// for a heartbeat write.
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
		e = &entry{retry: retryState{backoff: ibackoff.Backoff{Min: r.opts.BackoffMin, Max: r.opts.BackoffMax}}}
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
	e.want = wanted{svc: svc, health: h}
	if since, ttl, ok := e.ownTTLLapsed(); ok {
		// No heartbeat: this write itself would bring it back.
		if err := r.markLapsed(ctx, e, since, ttl); err != nil {
			return err
		}
	}
	if e.lapsed {
		if !e.lapseSeen {
			// Decided before its owner learnt of the lapse: not written.
			e.publishView()
			return nil
		}
		e.lapsed, e.lapseSeen = false, false
	}
	if !e.needsWrite() {
		e.publishView()
		return nil
	}
	return r.syncLocked(ctx, e, false)
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
	return r.deregister(ctx, e.want.svc)
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
	// Last, so that no service's alias goes critical before the service
	// itself is gone.
	if err := r.removeHeartbeat(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RegistrationStatus is a snapshot of one service for the status API.
type RegistrationStatus struct {
	Service
	Status string
	Output string
	// Registered: Consul holds the definition and status, as far as the
	// agent knows.
	Registered  bool
	LastWrite   time.Time
	LastError   string
	LastErrorAt time.Time // when LastError last happened; kept after a recovery
}

// Status returns every service this Registrar owns, sorted by ID. It never
// waits for a write in flight.
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

// Run keeps the registrations alive until ctx is done: it registers the
// heartbeat, refreshes every TTL check each TTL/3 (carrying the latest
// output), re-registers services the Consul agent lost (checked every
// ResyncInterval) and retries failed writes with capped exponential
// backoff. It returns nil when ctx is done; deregistering is left to the
// owner (DeregisterAll), which knows whether this is a stop or a restart.
func (r *Registrar) Run(ctx context.Context) error {
	r.ensureHeartbeat(ctx)
	refresh := time.NewTicker(r.opts.TTL / 3)
	defer refresh.Stop()
	resync := time.NewTicker(r.opts.ResyncInterval)
	defer resync.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		next := r.retryDue(ctx)
		retry.Stop()
		if !next.IsZero() {
			retry.Reset(max(time.Until(next), time.Millisecond))
		}
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

// poke wakes Run to look at the due entries.
func (r *Registrar) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}
