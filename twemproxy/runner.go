package twemproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// MasterSource is the Sentinel truth as the runner needs it: the current
// masters, and a notification whenever they change. The agent adapts the
// discovery Monitor to it.
type MasterSource interface {
	// Masters returns the current truth by master name, including the
	// last known address of names the Sentinels cannot confirm now
	// (flagged Stale). The runner does not modify the map.
	Masters() map[string]Master
	// Subscribe returns a channel that receives (coalesced) whenever the
	// truth changes, and a function that ends the subscription.
	Subscribe() (<-chan struct{}, func())
}

// Registry is where the pools are registered in Consul. The agent adapts the
// discovery Registrar, which writes only what changed and keeps TTLs alive.
type Registry interface {
	// Update makes Consul hold svc with its check at h; it is called on
	// every health check, so it must write only what changed.
	Update(ctx context.Context, svc Service, h Health) error
	// Remove deregisters a pool that is gone, and every pool on shutdown.
	Remove(ctx context.Context, id string) error
}

// Service is a pool's Consul service definition.
type Service struct {
	ID      string
	Name    string
	Tags    []string
	Meta    map[string]string
	Address string
	Port    int
}

// Health is the state of a pool's TTL check.
type Health struct {
	Status string // HealthPassing, HealthWarning or HealthCritical
	Output string
}

// Check statuses, as Consul spells them.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
)

// Restart modes.
const (
	// ModeSupervise runs nutcracker as the agent's child.
	ModeSupervise = "supervise"
	// ModeCommand runs an operator's restart command.
	ModeCommand = "command"
)

// RestartOptions say how a new config takes effect when Options.Proxy is
// nil.
type RestartOptions struct {
	Mode string // ModeSupervise (default) or ModeCommand
	// Command is nutcracker's argv in supervise mode (default:
	// NutcrackerBin -c ConfigFile) or the restart argv in command mode.
	Command []string
	// Timeout bounds the restart command (default 10s).
	Timeout time.Duration
	// StopTimeout is how long a supervised child gets between SIGTERM and
	// SIGKILL (default 5s).
	StopTimeout time.Duration
}

// Wait is the quiescence of consul-template, plus Settle for bursts.
//
// The first change after a quiet period runs at once (after Min, default 0):
// a failover is when every millisecond counts. Changes that arrive while a
// run is in flight, or within Settle of the previous change or run, belong to
// a burst: they coalesce into one run that starts once the truth has been
// quiet for Settle. No change waits longer than Max after it arrived.
type Wait struct {
	Min time.Duration
	// Max caps the wait (default: 1s, or 4*Min when that is larger).
	Max time.Duration
	// Settle is the quiet time that ends a burst (default 50ms; negative
	// disables it, so every run starts as soon as the previous one ends).
	Settle time.Duration
}

// Options configure a Runner. Timings are fields so tests can shrink them.
type Options struct {
	// Name identifies this twemproxy in logs, metrics and service meta.
	Name string
	// Node is the agent's node name; part of the service IDs.
	Node string
	// ConfigFile is the file nutcracker reads.
	ConfigFile string
	// Template (a path) or TemplateText makes the runner render the file
	// instead of editing it in place.
	Template     string
	TemplateText string
	// NutcrackerBin validates configs with --test-conf (default
	// "nutcracker").
	NutcrackerBin string

	Restart RestartOptions
	// Proxy overrides Restart; tests pass a fake.
	Proxy Proxy
	Wait  Wait

	// Service is the Consul service name of the pools (default twemproxy).
	Service string
	// Announce is the address registered for the pools; default: each
	// pool's listen host (empty for 0.0.0.0, so Consul uses the node's).
	Announce string
	// Registry registers the pools; nil means no Consul.
	Registry Registry
	// Masters is the Sentinel truth; required.
	Masters MasterSource

	// ValidateTimeout bounds nutcracker --test-conf (default 5s).
	ValidateTimeout time.Duration
	// ProbeTimeout is how long a restarted proxy has to answer on every
	// pool before the backup is restored (default 5s).
	ProbeTimeout time.Duration
	// CheckInterval is the period of the pool health check (default 1s);
	// CheckTimeout bounds one PING (default 500ms).
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	// RetryMin and RetryMax bound the backoff after a failed run or a
	// crash loop (default 500ms and 30s). A supervised child that dies
	// after StableAfter (default 10s) of running is restarted at once.
	RetryMin, RetryMax time.Duration
	StableAfter        time.Duration
	// UrgentRetry is the retry interval (jittered down to half of it) of
	// a run that failed before touching the proxy (render, write,
	// validate: a full disk, say) while the proxy still sends a shard to
	// an address the truth has moved away from (default 500ms). That is an
	// emergency, not a blip: it is retried at this pace for as long as it
	// lasts, not at a backoff that grows to RetryMax.
	UrgentRetry time.Duration

	// Resolver looks up server host names to tell whether a file's IP and
	// the truth's host name (or the reverse) are one node, which is not
	// rewritten (default: the system's). ResolveTimeout bounds a lookup
	// (default 500ms); ResolveCache is how long a result is kept (default
	// 5s).
	Resolver       Resolver
	ResolveTimeout time.Duration
	ResolveCache   time.Duration

	// Logger is the parent logger; the runner logs under the twemproxy name.
	Logger hclog.Logger
	// Metrics is required: the agent's registry, or telemetry.Discard()
	// where nobody scrapes (render, tests).
	Metrics *telemetry.Metrics
	Journal *telemetry.Journal

	// CrashPoint is passed to every config write (WriteOptions.CrashPoint):
	// the crash tests kill the process there. nil in the agent.
	CrashPoint func(step string)
}

// Runner keeps one twemproxy on the Sentinel truth (DESIGN §7). A single
// goroutine, Run's loop, owns the state; the pipeline and the health check
// run in their own goroutines, one of each at a time, and report back on
// channels.
type Runner struct {
	o      Options
	log    hclog.Logger
	proxy  Proxy
	child  childWatcher // nil unless the proxy is our child
	render RenderOptions
	names  *nodeNames
	mode   string

	// gen grows when a pipeline run starts; a health check that began
	// before drops its Consul writes rather than report a restart's
	// blackout as an outage.
	gen atomic.Uint64

	mu     sync.Mutex
	status Status
}

// New checks the options, fills in defaults and builds the proxy. Nothing
// runs until Run.
func New(o Options) (*Runner, error) {
	if o.ConfigFile == "" {
		return nil, errors.New("twemproxy: config file is required")
	}
	if o.Masters == nil {
		return nil, errors.New("twemproxy: a master source is required")
	}
	if o.Metrics == nil {
		return nil, errors.New("twemproxy: metrics are required (telemetry.Discard() where nobody scrapes them)")
	}
	if o.Name == "" {
		o.Name = strings.TrimSuffix(filepath.Base(o.ConfigFile), filepath.Ext(o.ConfigFile))
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.NutcrackerBin == "" {
		o.NutcrackerBin = "nutcracker"
	}
	if o.Service == "" {
		o.Service = consulname.Twemproxy
	}
	if o.Wait.Min < 0 || o.Wait.Max < 0 {
		return nil, fmt.Errorf("twemproxy %s: wait: negative durations", o.Name)
	}
	if o.Wait.Max == 0 {
		o.Wait.Max = max(time.Second, 4*o.Wait.Min)
	}
	if o.Wait.Min > o.Wait.Max {
		return nil, fmt.Errorf("twemproxy %s: wait: min %s is greater than max %s", o.Name, o.Wait.Min, o.Wait.Max)
	}
	switch {
	case o.Wait.Settle == 0:
		o.Wait.Settle = 50 * time.Millisecond
	case o.Wait.Settle < 0:
		o.Wait.Settle = 0
	}
	setDefault(&o.ValidateTimeout, 5*time.Second)
	setDefault(&o.ProbeTimeout, 5*time.Second)
	setDefault(&o.CheckInterval, time.Second)
	setDefault(&o.CheckTimeout, 500*time.Millisecond)
	setDefault(&o.RetryMin, 500*time.Millisecond)
	setDefault(&o.RetryMax, 30*time.Second)
	setDefault(&o.StableAfter, 10*time.Second)
	setDefault(&o.UrgentRetry, 500*time.Millisecond)
	setDefault(&o.ResolveTimeout, 500*time.Millisecond)
	setDefault(&o.ResolveCache, 5*time.Second)
	if o.Resolver == nil {
		o.Resolver = defaultResolver
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	r := &Runner{
		o:     o,
		log:   o.Logger.Named(telemetry.LogTwemproxy).With("proxy", o.Name),
		names: newNodeNames(o.Resolver, o.ResolveTimeout, o.ResolveCache),
	}
	r.render = RenderOptions{
		Name: o.Name, Node: o.Node, ConfigFile: o.ConfigFile,
		Template: o.Template, TemplateText: o.TemplateText,
		SameNode: func(a, b string) bool { return r.names.same(context.Background(), a, b) },
	}
	switch {
	case o.Proxy != nil:
		r.proxy, r.mode = o.Proxy, "custom"
	case o.Restart.Mode == "" || o.Restart.Mode == ModeSupervise:
		argv := o.Restart.Command
		if len(argv) == 0 {
			argv = []string{o.NutcrackerBin, "-c", o.ConfigFile}
		}
		sup, err := NewSupervisor(SupervisorOptions{
			Argv: argv, StopTimeout: o.Restart.StopTimeout, Logger: r.log.Named("nutcracker"),
		})
		if err != nil {
			return nil, fmt.Errorf("twemproxy %s: %w", o.Name, err)
		}
		r.proxy, r.mode = sup, ModeSupervise
	case o.Restart.Mode == ModeCommand:
		if len(o.Restart.Command) == 0 {
			return nil, fmt.Errorf("twemproxy %s: restart mode command needs a command", o.Name)
		}
		r.proxy, r.mode = &CommandRestarter{Argv: o.Restart.Command, Timeout: o.Restart.Timeout}, ModeCommand
	default:
		return nil, fmt.Errorf("twemproxy %s: restart mode %q: want supervise or command", o.Name, o.Restart.Mode)
	}
	if cw, ok := r.proxy.(childWatcher); ok {
		r.child = cw
	}
	r.status = Status{Name: o.Name, ConfigFile: o.ConfigFile, Mode: r.mode}
	return r, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// sameNode reports whether a server address and a master address name the
// same node (see nodeNames).
func (r *Runner) sameNode(ctx context.Context, a, b string) bool { return r.names.same(ctx, a, b) }

// Status returns a snapshot of the proxy, its pools and the last runs.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.clone()
}

// Render returns what the pipeline would write now, without writing.
func (r *Runner) Render() (Rendered, error) {
	return Render(r.render, r.o.Masters.Masters())
}

// loop is the state that only Run's goroutine touches.
type loop struct {
	inFlight bool
	// dirty: the truth changed since the last run started (or a failed
	// run must be retried). force: the next run restarts the proxy even
	// if the file is unchanged (the child is not running).
	dirty, force bool
	// why is the reason of a forced run: start, crash, pending or retry.
	why        string
	lastChange time.Time
	lastRunEnd time.Time
	quietUntil time.Time
	deadline   time.Time
	notBefore  time.Time
	// failures counts the failed runs since the last one that succeeded;
	// retry is their backoff, crashes that of a dying child (deaths in a
	// row).
	failures int
	retry    backoff.Backoff
	deaths   int
	crashes  backoff.Backoff
	// wrongSince is when the truth moved a server that the proxy still
	// uses (a failed rewrite); zero while the proxy agrees with it.
	wrongSince time.Time
	runningSHA string
	lastErr    string
	checking   bool
	checkAgain bool
	services   map[string]Service // what the last check registered, by ID
}

// runAt is when the next run may start.
func (s *loop) runAt() time.Time {
	at := s.quietUntil
	if !s.deadline.IsZero() && s.deadline.Before(at) {
		at = s.deadline
	}
	if s.notBefore.After(at) {
		at = s.notBefore
	}
	return at
}

// Run keeps the proxy on the truth until ctx ends. It starts the supervised
// child (supervise mode), applies the current truth at once, then follows
// every change. On return the child has been stopped and the pools
// deregistered. Run returns nil on a clean shutdown; failures of a run are
// reported (log, metrics, journal, Consul, Status) and retried, never
// returned.
func (r *Runner) Run(ctx context.Context) error {
	notify, unsubscribe := r.o.Masters.Subscribe()
	defer unsubscribe()
	if err := CleanTemp(r.o.ConfigFile); err != nil {
		r.log.Warn("cannot remove temp files of an interrupted rewrite", "error", err)
	}
	s := &loop{
		dirty: true, force: r.child != nil, why: "start", services: map[string]Service{},
		retry:   backoff.Backoff{Min: r.o.RetryMin, Max: r.o.RetryMax},
		crashes: backoff.Backoff{Min: r.o.RetryMin, Max: r.o.RetryMax},
	}
	if _, err := os.Stat(pendingMarker(r.o.ConfigFile)); err == nil {
		// The last agent rewrote the file but died before the proxy
		// loaded it: restart even though the file looks current.
		r.log.Warn("a restart was pending when the agent stopped; restarting the proxy")
		s.force, s.why = true, "pending"
	} else if r.child == nil {
		// Command mode: assume the running proxy loaded the file as it is.
		if b, err := os.ReadFile(r.o.ConfigFile); err == nil {
			s.runningSHA = sha(b)
		}
	}
	runDone := make(chan runResult, 1)
	checkDone := make(chan checkResult, 1)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	ticker := time.NewTicker(r.o.CheckInterval)
	defer ticker.Stop()
	var childExit <-chan struct{}

	startCheck := func() {
		if s.checking || s.inFlight {
			s.checkAgain = true
			return
		}
		s.checking, s.checkAgain = true, false
		in := checkInput{gen: r.gen.Load(), runningSHA: s.runningSHA, lastErr: s.lastErr, wrongSince: s.wrongSince, services: cloneServices(s.services)}
		go func() { checkDone <- r.check(ctx, in) }()
	}

	for {
		now := time.Now()
		if !s.inFlight && (s.dirty || s.force) {
			if at := s.runAt(); at.After(now) {
				timer.Reset(at.Sub(now))
			} else {
				timer.Stop()
				why := ""
				if s.force {
					why = s.why
				}
				s.inFlight, s.dirty, s.force = true, false, false
				s.quietUntil, s.deadline = time.Time{}, time.Time{}
				r.gen.Add(1)
				childExit = nil
				go func() { runDone <- r.pipeline(ctx, why) }()
			}
		}
		r.setPending(s.dirty || s.force)

		select {
		case <-ctx.Done():
			if s.inFlight {
				r.finishRun(s, <-runDone)
			}
			if s.checking {
				<-checkDone
			}
			r.shutdown(s)
			return nil

		case <-notify:
			drain(notify)
			r.onChange(s, time.Now())

		case <-timer.C:

		case res := <-runDone:
			r.finishRun(s, res)
			if r.child != nil && !s.force {
				// Watch the child this run left running; when the run
				// left none, the forced retry is already scheduled.
				childExit = r.child.Exited()
			}
			startCheck()

		case <-childExit:
			childExit = nil
			r.onChildExit(s)

		case <-ticker.C:
			startCheck()

		case res := <-checkDone:
			s.checking = false
			r.applyCheck(s, res)
			if s.checkAgain && !s.inFlight {
				startCheck()
			}
		}
	}
}

// drain empties a notification channel so a burst becomes one change.
func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// onChange records a truth change and when it may be acted on (see Wait).
func (r *Runner) onChange(s *loop, now time.Time) {
	quiet := r.o.Wait.Min
	burst := s.inFlight ||
		(!s.lastChange.IsZero() && now.Sub(s.lastChange) < r.o.Wait.Settle) ||
		(!s.lastRunEnd.IsZero() && now.Sub(s.lastRunEnd) < r.o.Wait.Settle)
	if burst {
		quiet = max(quiet, r.o.Wait.Settle)
	}
	if !s.dirty {
		s.deadline = now.Add(r.o.Wait.Max)
	}
	s.dirty = true
	s.quietUntil = now.Add(quiet)
	s.lastChange = now
	// New truth may be what a failed run needed: try it without waiting
	// out the backoff.
	s.notBefore = time.Time{}
}

// onChildExit handles a supervised nutcracker that died on its own: restart
// it at once, or with backoff when it keeps dying.
func (r *Runner) onChildExit(s *loop) {
	exitErr := r.child.ExitError()
	uptime := time.Since(r.child.Started())
	if uptime >= r.o.StableAfter {
		s.deaths = 0
		s.crashes.Reset()
	}
	delay := time.Duration(0)
	if s.deaths > 0 {
		delay = s.crashes.Next()
	}
	s.deaths++
	msg := fmt.Sprintf("nutcracker exited (%v) after %s", exitErr, uptime.Round(time.Millisecond))
	r.log.Error("nutcracker exited; restarting", "error", exitErr, "uptime", uptime.Round(time.Millisecond),
		"restart_in", delay, "output", r.child.Output())
	r.o.Journal.Add(telemetry.Event{Kind: telemetry.KindTwemproxy, Type: "exit", Subject: r.o.Name, Detail: msg, Level: "error"})
	r.noteError(s, msg)
	s.force, s.why = true, "crash"
	s.runningSHA = ""
	s.notBefore = time.Now().Add(delay)
}

func (r *Runner) noteError(s *loop, msg string) {
	s.lastErr = msg
	r.mu.Lock()
	r.status.LastError, r.status.LastErrorAt = msg, time.Now()
	r.mu.Unlock()
}

func (r *Runner) setPending(p bool) {
	r.mu.Lock()
	r.status.Pending = p
	r.mu.Unlock()
}

// shutdown stops a supervised child and deregisters the pools. The run's
// context has ended, so both get fresh deadlines.
func (r *Runner) shutdown(s *loop) {
	stopTimeout := r.o.Restart.StopTimeout
	if stopTimeout <= 0 {
		stopTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout+time.Second)
	defer cancel()
	if err := r.proxy.Stop(ctx); err != nil {
		r.log.Error("stop nutcracker", "error", err)
	}
	if r.o.Registry != nil {
		for id := range s.services {
			rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := r.o.Registry.Remove(rctx, id); err != nil {
				r.log.Warn("deregister pool", "service_id", id, "error", err)
			}
			rcancel()
			deleteCheckStatus(r.o.Metrics, id)
		}
	}
	r.log.Info("stopped")
}
