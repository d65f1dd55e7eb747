package twemproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/agent/telemetry"
)

// MasterSource is the Sentinel truth as the runner needs it: the current
// masters, and a notification whenever they change. The agent adapts the
// discovery Monitor to it.
type MasterSource interface {
	// Masters returns the current truth by master name. The runner does
	// not modify the map.
	Masters() map[string]Master
	// Subscribe returns a channel that receives (coalesced) whenever the
	// truth changes, and a function that ends the subscription.
	Subscribe() (<-chan struct{}, func())
}

// Registry is where the pools are registered in Consul. The agent adapts the
// discovery Registrar, which writes only what changed and keeps TTLs alive.
type Registry interface {
	Update(ctx context.Context, svc Service, h Health) error
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

	// Logger is the parent logger; the runner logs under the twemproxy name.
	Logger  hclog.Logger
	Metrics *telemetry.Metrics
	Journal *telemetry.Journal
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
		o.Service = "twemproxy"
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
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.NewTestMetrics()
	}
	r := &Runner{
		o:   o,
		log: o.Logger.Named(telemetry.LogTwemproxy).With("proxy", o.Name),
		render: RenderOptions{
			Name: o.Name, Node: o.Node, ConfigFile: o.ConfigFile,
			Template: o.Template, TemplateText: o.TemplateText,
		},
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
	firstChange  time.Time
	lastChange   time.Time
	lastRunEnd   time.Time
	quietUntil   time.Time
	deadline     time.Time
	notBefore    time.Time
	failures     int
	deaths       int
	runningSHA   string
	lastErr      string
	checking     bool
	checkAgain   bool
	services     map[string]Service // what the last check registered, by ID
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
	s := &loop{dirty: true, force: r.child != nil, services: map[string]Service{}}
	if r.child == nil {
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
		in := checkInput{gen: r.gen.Load(), runningSHA: s.runningSHA, lastErr: s.lastErr, services: cloneServices(s.services)}
		go func() { checkDone <- r.check(ctx, in) }()
	}

	for {
		now := time.Now()
		if !s.inFlight && (s.dirty || s.force) {
			if at := s.runAt(); at.After(now) {
				timer.Reset(at.Sub(now))
			} else {
				timer.Stop()
				force := s.force
				s.inFlight, s.dirty, s.force = true, false, false
				s.quietUntil, s.deadline = time.Time{}, time.Time{}
				r.gen.Add(1)
				childExit = nil
				go func() { runDone <- r.pipeline(ctx, force) }()
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
			if r.child != nil {
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
		s.firstChange = now
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
	var exitErr error
	if sup, ok := r.proxy.(*Supervisor); ok {
		exitErr = sup.ExitError()
	}
	uptime := time.Since(r.childStarted())
	if uptime >= r.o.StableAfter {
		s.deaths = 0
	}
	delay := time.Duration(0)
	if s.deaths > 0 {
		delay = backoff(s.deaths, r.o.RetryMin, r.o.RetryMax)
	}
	s.deaths++
	msg := fmt.Sprintf("nutcracker exited (%v) after %s", exitErr, uptime.Round(time.Millisecond))
	r.log.Error("nutcracker exited; restarting", "error", exitErr, "uptime", uptime.Round(time.Millisecond),
		"restart_in", delay, "output", r.child.Output())
	r.o.Journal.Add(telemetry.Event{Kind: telemetry.KindTwemproxy, Type: "exit", Subject: r.o.Name, Detail: msg, Level: "error"})
	r.noteError(s, msg)
	s.force = true
	s.runningSHA = ""
	s.notBefore = time.Now().Add(delay)
}

func (r *Runner) childStarted() time.Time {
	if sup, ok := r.proxy.(*Supervisor); ok {
		sup.mu.Lock()
		defer sup.mu.Unlock()
		return sup.started
	}
	return time.Now()
}

// backoff is capped exponential with ±20% jitter: n=1 gives about min.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	j := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return max(j, time.Millisecond)
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

// runResult is what one pipeline run reports to the loop.
type runResult struct {
	start, end time.Time
	noop       bool
	forced     bool
	changes    []Change
	masters    map[string]Master
	wrote      bool
	sha        string // of the desired file
	// runningSHA is the config the proxy runs after the run; set when
	// runningKnown.
	runningSHA   string
	runningKnown bool
	restart      *restartResult
	rollback     *restartResult
	step         string // failed step
	err          error
	proxyDown    bool // no proxy is known to serve after the run
	renderTime   time.Duration
	writeTime    time.Duration
}

// restartResult is one restart and its probe.
type restartResult struct {
	at       time.Time
	first    time.Time // first pool answered
	last     time.Time // every pool answered
	duration time.Duration
	blackout time.Duration
	step     string
	err      error
}

// pipeline is one run of DESIGN §7 steps 2-7. It runs in its own goroutine
// and touches no loop state.
func (r *Runner) pipeline(ctx context.Context, force bool) (res runResult) {
	res.start, res.forced = time.Now(), force
	defer func() { res.end = time.Now() }()
	var cur []byte
	fail := func(step string, err error) runResult {
		res.step, res.err = step, err
		if force {
			// The proxy is not running: serve the file as it is while
			// the new one is retried.
			res.proxyDown = true
			if pools, perr := Pools(cur); cur != nil && perr == nil {
				rs := r.restart(ctx, pools)
				res.restart = &rs
				if rs.err == nil {
					res.proxyDown = false
					res.runningSHA, res.runningKnown = sha(cur), true
				}
			}
		}
		return res
	}

	res.masters = r.o.Masters.Masters()
	cur, err := os.ReadFile(r.o.ConfigFile)
	if err != nil && !(errors.Is(err, fs.ErrNotExist) && r.render.TemplateText+r.render.Template != "") {
		return fail("render", fmt.Errorf("read %s: %w", r.o.ConfigFile, err))
	}
	rd, err := renderFrom(r.render, cur, res.masters)
	if err != nil {
		return fail("render", err)
	}
	pools, err := Pools(rd.Desired)
	if err != nil {
		return fail("render", fmt.Errorf("config to write: %w", err))
	}
	res.renderTime = time.Since(res.start)
	res.changes, res.sha = rd.Changes, sha(rd.Desired)
	changed := rd.Changed()
	if !changed && !force {
		res.noop = true
		return res
	}

	if changed {
		tw := time.Now()
		var checkErr error
		wrote, err := WriteAtomic(r.o.ConfigFile, rd.Desired, WriteOptions{
			Backup: true,
			Check: func(tmp string) error {
				vctx, cancel := context.WithTimeout(ctx, r.o.ValidateTimeout)
				defer cancel()
				checkErr = CheckFile(vctx, r.o.NutcrackerBin, tmp)
				return checkErr
			},
		})
		res.writeTime = time.Since(tw)
		if err != nil {
			if checkErr != nil {
				return fail("validate", err)
			}
			return fail("write", err)
		}
		res.wrote = wrote
		if wrote {
			r.o.Metrics.ProxyConfigWrites.WithLabelValues(r.o.Name).Inc()
		}
	}

	rs := r.restart(ctx, pools)
	res.restart = &rs
	if rs.err == nil {
		res.runningSHA, res.runningKnown = res.sha, true
		return res
	}
	res.step, res.err = rs.step, rs.err
	res.runningKnown = true
	if ctx.Err() != nil {
		// Shutting down: the new file was validated and the proxy is
		// being stopped anyway; a rollback now would only lose it.
		res.err = ctx.Err()
		return res
	}
	if !changed || cur == nil {
		res.proxyDown = true
		return res
	}

	// Roll back: the old file ran before, so it goes back without a check
	// and without touching the backup, which holds it too.
	if _, err := WriteAtomic(r.o.ConfigFile, cur, WriteOptions{}); err != nil {
		res.err = fmt.Errorf("%w; restoring the previous config failed too: %v", res.err, err)
		res.proxyDown = true
		return res
	}
	oldPools, err := Pools(cur)
	if err != nil {
		oldPools = pools
	}
	rb := r.restart(ctx, oldPools)
	res.rollback = &rb
	r.o.Metrics.ProxyRollbacks.WithLabelValues(r.o.Name, res.step).Inc()
	if rb.err != nil {
		res.err = fmt.Errorf("%w; the previous config does not start either: %v", res.err, rb.err)
		res.proxyDown = true
		return res
	}
	res.runningSHA = sha(cur)
	return res
}

// restart restarts the proxy and probes every pool.
func (r *Runner) restart(ctx context.Context, pools []Pool) (rs restartResult) {
	rs.at = time.Now()
	defer func() {
		result := "ok"
		if rs.err != nil {
			result = "failed"
		} else {
			r.o.Metrics.ProxyRestartDuration.WithLabelValues(r.o.Name).Observe(rs.duration.Seconds())
		}
		r.o.Metrics.ProxyRestarts.WithLabelValues(r.o.Name, result).Inc()
	}()
	if err := r.proxy.Restart(ctx); err != nil {
		rs.step, rs.err = "restart", err
		return rs
	}
	var exited <-chan struct{}
	if r.child != nil {
		exited = r.child.Exited()
	}
	first, last, err := waitPools(ctx, pools, r.o.ProbeTimeout, exited)
	if err != nil {
		if errors.Is(err, errChildExited) {
			var exitErr error
			if sup, ok := r.proxy.(*Supervisor); ok {
				exitErr = sup.ExitError()
			}
			err = fmt.Errorf("nutcracker exited while starting (%v): %s", exitErr, oneLine(r.child.Output()))
		}
		rs.step, rs.err = "probe", err
		return rs
	}
	rs.first, rs.last = first, last
	rs.duration, rs.blackout = last.Sub(rs.at), first.Sub(rs.at)
	return rs
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "no output"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " / ")
}

// finishRun takes a run's result into the loop state and reports it.
func (r *Runner) finishRun(s *loop, res runResult) {
	s.inFlight = false
	if res.runningKnown {
		s.runningSHA = res.runningSHA
	}
	if res.noop {
		s.failures, s.lastErr = 0, ""
		return
	}
	// Only a run that acted marks a burst; a no-op must not delay the next
	// change.
	s.lastRunEnd = res.end
	rs := &RunStatus{At: res.start, DurationMS: ms(res.end.Sub(res.start)), Changes: res.changes, Result: "ok"}
	r.mu.Lock()
	r.status.Runs++
	if r.child != nil {
		r.status.PID = r.child.PID()
	}
	if res.restart != nil {
		r.status.Restarts++
		r.status.LastRestart = restartStatus(res.restart, reason(res))
		if res.runningKnown && res.restart.err == nil {
			r.status.RunningSHA256 = res.runningSHA
		}
	}
	if res.rollback != nil {
		r.status.Restarts++
		r.status.Rollbacks++
		r.status.LastRestart = restartStatus(res.rollback, "rollback")
	}
	r.mu.Unlock()

	if res.err != nil && errors.Is(res.err, context.Canceled) {
		r.log.Debug("pipeline interrupted by shutdown", "step", res.step)
	} else if res.err != nil {
		s.failures++
		delay := backoff(s.failures, r.o.RetryMin, r.o.RetryMax)
		s.notBefore = time.Now().Add(delay)
		s.dirty = true
		if res.proxyDown && r.child != nil {
			s.force = true
			s.runningSHA = ""
		}
		rs.Result, rs.Step, rs.Error = "failed", res.step, res.err.Error()
		if res.rollback != nil && res.rollback.err == nil {
			rs.Result = "rolled-back"
		}
		r.o.Metrics.ProxyPipelineFailures.WithLabelValues(r.o.Name, res.step).Inc()
		msg := fmt.Sprintf("%s failed: %v", res.step, res.err)
		r.noteError(s, msg)
		r.log.Error("pipeline failed", "step", res.step, "error", res.err,
			"changes", describe(res.changes), "rolled_back", rs.Result == "rolled-back",
			"proxy_down", res.proxyDown, "retry_in", delay.Round(time.Millisecond))
		typ := "failure"
		if res.rollback != nil {
			typ = "rollback"
		}
		r.o.Journal.Add(telemetry.Event{Kind: telemetry.KindTwemproxy, Type: typ, Subject: r.o.Name, Detail: msg, Level: "error"})
	} else {
		s.failures = 0
		s.lastErr = ""
		r.reportSuccess(res)
	}
	r.mu.Lock()
	r.status.LastRun = rs
	r.mu.Unlock()
}

func reason(res runResult) string {
	switch {
	case res.wrote:
		return "rewrite"
	case res.forced:
		return "start"
	default:
		return "restart"
	}
}

func restartStatus(rr *restartResult, why string) *RestartStatus {
	st := &RestartStatus{At: rr.at, DurationMS: ms(rr.duration), BlackoutMS: ms(rr.blackout), Result: "ok", Reason: why}
	if rr.err != nil {
		st.Result, st.Error = "failed", rr.err.Error()
	}
	return st
}

// reportSuccess records reaction times, marks the failovers applied and logs
// the figures an operator tunes against.
func (r *Runner) reportSuccess(res runResult) {
	rr := res.restart
	if rr == nil {
		return
	}
	var worst time.Duration
	done := map[string]bool{}
	for _, c := range res.changes {
		m, ok := res.masters[c.Name]
		if !ok || done[c.Name] {
			continue
		}
		done[c.Name] = true
		if !m.Since.IsZero() {
			d := rr.last.Sub(m.Since)
			worst = max(worst, d)
			r.o.Metrics.Reaction.WithLabelValues("twemproxy").Observe(d.Seconds())
		}
		r.o.Journal.Applied("twemproxy", c.Name, m.Addr, rr.last)
	}
	detail := fmt.Sprintf("restart %s, blackout %s", rr.duration.Round(10*time.Microsecond), rr.blackout.Round(10*time.Microsecond))
	if len(res.changes) > 0 {
		detail = describe(res.changes) + "; " + detail
	}
	r.o.Journal.Add(telemetry.Event{Kind: telemetry.KindTwemproxy, Type: reason(res), Subject: r.o.Name, Detail: detail})
	r.log.Info("config applied", "reason", reason(res), "changes", describe(res.changes),
		"restart", rr.duration, "blackout", rr.blackout, "reaction", worst,
		"render", res.renderTime, "validate_write", res.writeTime, "run", res.end.Sub(res.start))
}

// checkInput is what a health check needs from the loop.
type checkInput struct {
	gen        uint64
	runningSHA string
	lastErr    string
	services   map[string]Service
}

// checkResult is a health check's findings.
type checkResult struct {
	stale    bool
	pools    []PoolStatus
	fileSHA  string
	services map[string]Service
	err      error
}

var idUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// ServiceID is the Consul service ID of a pool: twemproxy-<node>-<pool>.
func ServiceID(node, pool string) string {
	return "twemproxy-" + idUnsafe.ReplaceAllString(node, "-") + "-" + idUnsafe.ReplaceAllString(pool, "-")
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
			r.updateService(ctx, in.services[id], Health{Status: HealthCritical, Output: fmt.Sprintf("config %s unreadable: %v", r.o.ConfigFile, err)})
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
	want := map[string]Service{}
	for i, p := range pools {
		svc, ok := r.service(p)
		if !ok {
			continue
		}
		statuses[i].ServiceID = svc.ID
		want[svc.ID] = svc
		if r.o.Registry != nil {
			r.updateService(ctx, svc, Health{Status: statuses[i].Health, Output: statuses[i].Output})
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

func (r *Runner) updateService(ctx context.Context, svc Service, h Health) {
	telemetry.SetOneOf(r.o.Metrics.CheckStatus, []string{svc.ID}, h.Status, HealthPassing, HealthWarning, HealthCritical)
	if r.o.Registry == nil {
		return
	}
	if err := r.o.Registry.Update(ctx, svc, h); err != nil {
		r.log.Warn("register pool", "service_id", svc.ID, "error", err)
	}
}

func deleteCheckStatus(m *telemetry.Metrics, id string) {
	for _, st := range []string{HealthPassing, HealthWarning, HealthCritical} {
		m.CheckStatus.DeleteLabelValues(id, st)
	}
}

// service is the Consul definition of a pool; unix-socket pools have no
// port to register.
func (r *Runner) service(p Pool) (Service, bool) {
	host, port, ok := p.ListenHostPort()
	if !ok {
		return Service{}, false
	}
	addr := r.o.Announce
	if addr == "" {
		addr = host
		if h := strings.Trim(host, "[]"); h == "0.0.0.0" || h == "::" {
			addr = ""
		}
	}
	return Service{
		ID:      ServiceID(r.o.Node, p.Name),
		Name:    r.o.Service,
		Tags:    []string{p.Name},
		Meta:    map[string]string{"proxy": r.o.Name, "pool": p.Name},
		Address: addr,
		Port:    port,
	}, true
}

// poolHealth pings one pool and compares its servers with the truth.
func (r *Runner) poolHealth(ctx context.Context, p Pool, masters map[string]Master, in checkInput, fileSHA string) PoolStatus {
	ps := PoolStatus{Name: p.Name, Listen: p.Listen}
	var wrong []string
	managed := 0
	for _, s := range p.Servers {
		ss := ServerStatus{Name: s.Name, Addr: s.Addr(), Weight: s.Weight, Matches: true}
		if m, ok := masters[s.Name]; ok && s.Name != "" {
			managed++
			ss.Truth = normalAddr(m.Addr)
			ss.Matches = ss.Truth == ss.Addr
			if !ss.Matches {
				wrong = append(wrong, fmt.Sprintf("%s is %s but Sentinel says %s", s.Name, ss.Addr, ss.Truth))
			}
		}
		ps.Servers = append(ps.Servers, ss)
	}
	if err := Ping(ctx, p, r.o.CheckTimeout); err != nil {
		ps.Health = HealthCritical
		ps.Output = fmt.Sprintf("pool %s does not answer PING at %s: %v", p.Name, p.Listen, err)
		return ps
	}
	switch {
	case len(wrong) > 0:
		ps.Health = HealthWarning
		ps.Output = fmt.Sprintf("pool %s answers, but %s", p.Name, strings.Join(wrong, "; "))
		if in.lastErr != "" {
			ps.Output += " (" + in.lastErr + ")"
		} else {
			ps.Output += " (rewrite pending)"
		}
	case in.runningSHA != "" && in.runningSHA != fileSHA:
		ps.Health = HealthWarning
		ps.Output = fmt.Sprintf("pool %s answers, but nutcracker has not loaded the current file yet", p.Name)
		if in.lastErr != "" {
			ps.Output += " (" + in.lastErr + ")"
		}
	default:
		ps.Health = HealthPassing
		ps.Output = fmt.Sprintf("pool %s answers PING at %s; %d of %d servers follow Sentinel", p.Name, p.Listen, managed, len(p.Servers))
	}
	return ps
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

func cloneServices(m map[string]Service) map[string]Service {
	out := make(map[string]Service, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
