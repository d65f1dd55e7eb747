package haproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// LogName is the logger name of the drivers.
const LogName = "haproxy"

// KindHAProxy is the journal kind of the drivers' events.
const KindHAProxy = telemetry.KindHAProxy

// Options configure a Driver. Timings are fields so tests can shrink them.
type Options struct {
	// Name identifies this HAProxy in logs, metrics and service meta.
	Name string
	// Node is the agent's node name; part of the service IDs.
	Node string
	// RuntimeAPI is a unix socket path or host:port of a `stats socket
	// ... level admin`.
	RuntimeAPI string
	// Servers are the backend/server pairs that follow a master; at least one.
	Servers []Server
	// Frontends are registered in Consul; none registers one service named
	// after the HAProxy, covering every server.
	Frontends []Frontend
	// Service is the Consul service name of the frontends (default haproxy).
	Service string
	// Truth is the Sentinel truth; required.
	Truth Truth
	// Registry registers the frontends; nil means no Consul.
	Registry consulreg.Registry

	// Timeout bounds one runtime API command (default 1s).
	Timeout time.Duration
	// ReconcileInterval is the slow tick that reads `show servers state`
	// and puts HAProxy right (default 5s): it catches a HAProxy that was
	// restarted with its original config, or an operator's change.
	ReconcileInterval time.Duration
	// RetryMin and RetryMax bound the backoff while the runtime API does
	// not answer or a command fails (default 200ms and 5s: a HAProxy that
	// may point at a dead master is an emergency, so the cap stays short).
	RetryMin, RetryMax time.Duration

	// Logger is the parent logger; the driver logs under LogName.
	Logger hclog.Logger
	// Metrics are required: build them with NewMetrics.
	Metrics *Metrics
	Journal *telemetry.Journal
}

// Driver keeps one HAProxy's servers on the Sentinel truth. A single
// goroutine, Run's loop, owns the state and talks to the runtime API; the
// Consul writes run in a reporter goroutine fed through a mailbox.
type Driver struct {
	o      Options
	log    hclog.Logger
	client *Client

	mu     sync.Mutex
	status Status
}

// New checks the options and fills in defaults. Nothing runs until Run.
func New(o Options) (*Driver, error) {
	if o.Name == "" {
		return nil, errors.New("haproxy: a name is required")
	}
	if o.RuntimeAPI == "" {
		return nil, fmt.Errorf("haproxy %s: runtime_api is required", o.Name)
	}
	if len(o.Servers) == 0 {
		return nil, fmt.Errorf("haproxy %s: no servers to follow", o.Name)
	}
	if o.Truth == nil {
		return nil, fmt.Errorf("haproxy %s: a Sentinel truth is required", o.Name)
	}
	if o.Metrics == nil {
		return nil, fmt.Errorf("haproxy %s: metrics are required (NewMetrics)", o.Name)
	}
	seen := map[string]bool{}
	for _, s := range o.Servers {
		if s.Backend == "" || s.Server == "" || s.MasterName == "" {
			return nil, fmt.Errorf("haproxy %s: server %q: backend, server and master_name are required", o.Name, s.Name())
		}
		if seen[s.Name()] {
			return nil, fmt.Errorf("haproxy %s: server %s listed twice", o.Name, s.Name())
		}
		seen[s.Name()] = true
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.Service == "" {
		o.Service = consulname.HAProxy
	}
	if len(o.Frontends) == 0 {
		o.Frontends = []Frontend{{Name: o.Name}}
	}
	setDefault(&o.Timeout, time.Second)
	setDefault(&o.ReconcileInterval, 5*time.Second)
	setDefault(&o.RetryMin, 200*time.Millisecond)
	setDefault(&o.RetryMax, 5*time.Second)
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	d := &Driver{
		o:      o,
		log:    o.Logger.Named(LogName).With("haproxy", o.Name),
		client: &Client{Addr: o.RuntimeAPI, Timeout: o.Timeout},
	}
	d.status = Status{Name: o.Name, RuntimeAPI: o.RuntimeAPI}
	return d, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Status returns a snapshot of the servers, the frontends and the last move.
func (d *Driver) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status.clone()
}

// loop is the state only Run's goroutine touches.
type loop struct {
	reachable bool // the runtime API answered the last command
	started   bool // one reconcile reached HAProxy
	lastErr   string
	retry     backoff.Backoff
	// cut holds moved servers whose old sessions are still to be shut down.
	cut map[Server]bool
}

// Run keeps HAProxy on the truth until ctx ends: a reconcile at once, on
// every truth change, on every tick, and after a failure with backoff (the
// first success after the runtime API was unreachable is the reconcile on
// reconnect). On return the frontends have been deregistered. Failures are
// reported (log, metrics, journal, Consul, Status) and retried, never
// returned; Run returns nil.
func (d *Driver) Run(ctx context.Context) error {
	notify, unsubscribe := d.o.Truth.Subscribe()
	defer unsubscribe()
	rctx, stopReporter := context.WithCancel(context.WithoutCancel(ctx))
	var rep *reporter
	if d.o.Registry != nil {
		rep = newReporter(d.o.Registry, d.log, d.o.Metrics)
		go rep.run(rctx)
	}
	defer func() {
		stopReporter()
		if rep != nil {
			<-rep.done
		}
		d.log.Info("stopped")
	}()
	s := &loop{retry: backoff.Backoff{Min: d.o.RetryMin, Max: d.o.RetryMax}, cut: map[Server]bool{}}
	timer := time.NewTimer(0)
	defer timer.Stop()
	reason := "start"
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-notify:
			drainNotify(notify)
			reason = "truth"
		case <-timer.C:
		}
		err := d.reconcile(ctx, s, reason, rep)
		if ctx.Err() != nil {
			return nil
		}
		next := d.o.ReconcileInterval
		reason = "tick"
		if err != nil {
			next, reason = s.retry.Next(), "retry"
		} else {
			s.retry.Reset()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// drainNotify empties the notification channel so a burst is one reconcile.
func drainNotify(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// reconcile reads HAProxy's servers, applies the plan, reads them again
// when it changed something, and reports the result. The error is what
// makes the loop retry: the runtime API failed, a command was refused, or
// HAProxy lacks a managed server.
func (d *Driver) reconcile(ctx context.Context, s *loop, reason string, rep *reporter) error {
	masters := d.o.Truth.Masters()
	state, err := d.client.ShowServersState(ctx)
	d.noteCall("show servers state", err)
	var verdicts []Verdict
	var applyErr error
	if err == nil {
		if !s.reachable {
			d.log.Info("runtime API answers", "runtime_api", d.o.RuntimeAPI, "reason", reason)
		}
		s.reachable, s.started = true, true
		var steps []Step
		steps, verdicts = Plan(d.o.Servers, masters, state)
		if len(steps) > 0 || len(s.cut) > 0 {
			applyErr = d.apply(ctx, s, steps)
			// Read back what HAProxy now holds; on failure the verdicts
			// of the first read stand, and the retry reads again.
			if again, err2 := d.client.ShowServersState(ctx); err2 == nil {
				_, verdicts = Plan(d.o.Servers, masters, again)
			} else {
				d.noteCall("show servers state", err2)
				err = err2
			}
		}
	} else {
		if s.reachable || !s.started {
			d.log.Error("HAProxy runtime API does not answer; retrying", "runtime_api", d.o.RuntimeAPI, "error", err)
			d.o.Journal.Add(telemetry.Event{Kind: KindHAProxy, Type: "unreachable", Subject: d.o.Name, Detail: err.Error(), Level: "error"})
		}
		s.reachable, s.started = false, true
	}
	problem := d.problem(err, applyErr, verdicts)
	d.record(s, reason, err, problem, verdicts)
	d.report(rep, verdicts, err)
	if problem != "" {
		return errors.New(problem)
	}
	return nil
}

// problem is the error a reconcile ends with, in words: the API failure, a
// refused command, or the managed servers HAProxy lacks.
func (d *Driver) problem(apiErr, applyErr error, verdicts []Verdict) string {
	switch {
	case apiErr != nil:
		return apiErr.Error()
	case applyErr != nil:
		return applyErr.Error()
	}
	var missing []string
	for _, v := range verdicts {
		if v.Missing {
			missing = append(missing, v.Server.Name())
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("HAProxy at %s has no server %s: check the backend and server names of haproxy %s in the agent's config",
			d.o.RuntimeAPI, strings.Join(missing, ", "), d.o.Name)
	}
	return ""
}

// record takes a reconcile's outcome into the status and the metrics, and
// logs a problem when it differs from the last one.
func (d *Driver) record(s *loop, reason string, apiErr error, problem string, verdicts []Verdict) {
	result := "ok"
	if problem != "" {
		result = "failed"
	}
	d.o.Metrics.Reconciles.WithLabelValues(d.o.Name, reason, result).Inc()
	up := 0.0
	if apiErr == nil {
		up = 1
	}
	d.o.Metrics.Up.WithLabelValues(d.o.Name).Set(up)
	mismatched := 0
	for _, v := range verdicts {
		if !v.Matches {
			mismatched++
		}
	}
	if apiErr == nil {
		d.o.Metrics.Mismatched.WithLabelValues(d.o.Name).Set(float64(mismatched))
	}
	if problem != "" && problem != s.lastErr && apiErr == nil {
		d.log.Error("cannot put HAProxy right", "error", problem)
		d.o.Journal.Add(telemetry.Event{Kind: KindHAProxy, Type: "error", Subject: d.o.Name, Detail: problem, Level: "error"})
	}
	s.lastErr = problem
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status.Reachable = apiErr == nil
	d.status.Reconciles++
	if apiErr == nil {
		d.status.LastReconcile = time.Now()
		d.status.Servers = verdicts
	}
	if problem != "" {
		d.status.LastError, d.status.LastErrorAt = problem, time.Now()
	} else {
		d.status.LastError = ""
	}
}

// report computes the frontends' checks and hands them to the reporter.
func (d *Driver) report(rep *reporter, verdicts []Verdict, apiErr error) {
	want := map[string]registration{}
	fs := make([]FrontendStatus, 0, len(d.o.Frontends))
	// While the runtime API does not answer, the Meta keeps the addresses
	// last read (the check says critical): a blip rewrites no Meta.
	known := verdicts
	if apiErr != nil {
		d.mu.Lock()
		known = d.status.Servers
		d.mu.Unlock()
	}
	for _, f := range d.o.Frontends {
		svc := d.service(f, known)
		h := frontendHealth(f, verdicts, apiErr, d.o.RuntimeAPI)
		want[svc.ID] = registration{svc: svc, h: h}
		fs = append(fs, FrontendStatus{Name: f.Name, Address: f.Address, ServiceID: svc.ID, Health: h})
	}
	d.mu.Lock()
	d.status.Frontends = fs
	d.mu.Unlock()
	if rep != nil {
		rep.post(want)
	} else {
		for id, g := range want {
			d.o.Metrics.setCheck(id, g.h.Status)
		}
	}
}
