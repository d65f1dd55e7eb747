package twemproxy

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Runner keeps one twemproxy on the Sentinel truth. A single
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
	stage  stager // files Prestage validated ahead of a promotion
	mode   string

	// gen grows when a pipeline run starts; a health check that began
	// before drops its Consul writes rather than report a restart's
	// blackout as an outage.
	gen atomic.Uint64

	mu     sync.Mutex
	status Status
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
	services   map[string]consulreg.Service // what the last check registered, by ID
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
	s := r.startState()
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
		if r.startRun(ctx, s, timer, runDone) {
			childExit = nil
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

// startRun starts the pipeline when a run is due and none is in flight, or
// sets timer for when one is due; it reports whether it started one.
func (r *Runner) startRun(ctx context.Context, s *loop, timer *time.Timer, done chan<- runResult) bool {
	if s.inFlight || !(s.dirty || s.force) {
		return false
	}
	now := time.Now()
	if at := s.runAt(); at.After(now) {
		timer.Reset(at.Sub(now))
		return false
	}
	timer.Stop()
	why := ""
	if s.force {
		why = s.why
	}
	s.inFlight, s.dirty, s.force = true, false, false
	s.quietUntil, s.deadline = time.Time{}, time.Time{}
	r.gen.Add(1)
	go func() { done <- r.pipeline(ctx, why) }()
	return true
}

// startState is the loop's state at start: the temp files of an
// interrupted rewrite removed, a first run due, and a restart forced when
// the proxy is our child or the last agent died before it loaded the file.
func (r *Runner) startState() *loop {
	if err := CleanTemp(r.o.ConfigFile); err != nil {
		r.log.Warn("cannot remove temp files of an interrupted rewrite", "error", err)
	}
	s := &loop{
		dirty: true, force: r.child != nil, why: "start", services: map[string]consulreg.Service{},
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
	return s
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
	r.stage.discard()
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
