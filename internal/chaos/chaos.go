// Package chaos runs a fault campaign against the real stack: three Consul
// servers with a client agent per host, three Sentinels, two shards of three
// Redis with an agent beside each, an agent supervising nutcracker, and an
// HAProxy in front of both shards with an agent driving it through the
// runtime API. For a given time and seed it injects random faults (kill -9,
// SIGSTOP, restarts of every kind of process, cut links, planned failovers,
// SIGHUP reloads, a full disk) and checks the product's invariants all
// through:
//
//   - DNS never answers two masters for a shard, nor a node no Sentinel named;
//   - HAProxy never sends a shard's traffic (new connections, open
//     sessions) to two live masters for longer than a move takes;
//   - after the faults heal, DNS, the twemproxy pool and its config file, and
//     HAProxy's servers (`show servers state`: address, taking traffic)
//     agree with Sentinel within a bounded time;
//   - the proxy's config file is never invalid or partial;
//   - no acknowledged write through DNS, the pool or HAProxy is lost, except
//     one a Redis acknowledged just before it was killed or frozen;
//   - no process or file is left behind, and agent memory stays bounded.
//
// It reports the faults by kind, the checks made and every violation with its
// timeline and the seed that reproduces the run. cmd/rca-chaos is its command.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Kinds of fault, the values of Options.Faults.
const (
	KillRedis      = "kill-redis"
	PauseRedis     = "pause-redis"
	RestartRedis   = "restart-redis"
	KillSentinel   = "kill-sentinel"
	PauseSentinel  = "pause-sentinel"
	KillAgent      = "kill-agent"
	PauseAgent     = "pause-agent"
	ReloadAgent    = "reload-agent"
	KillNutcracker = "kill-nutcracker"
	// The HAProxy and the agent beside it (host-edge), each killed, frozen
	// or restarted.
	KillHAProxy         = "kill-haproxy"
	PauseHAProxy        = "pause-haproxy"
	RestartHAProxy      = "restart-haproxy"
	KillHAProxyAgent    = "kill-haproxy-agent"
	PauseHAProxyAgent   = "pause-haproxy-agent"
	RestartHAProxyAgent = "restart-haproxy-agent"
	KillConsulClient    = "kill-consul-client"
	KillConsulServer    = "kill-consul-server"
	CutSentinelLinks    = "cut-sentinel-links"
	CutConsulLink       = "cut-consul-link"
	PlannedFailover     = "planned-failover"
	DiskFull            = "disk-full"
)

// AllFaults is every kind of fault the campaign knows.
var AllFaults = []string{
	KillRedis, PauseRedis, RestartRedis, KillSentinel, PauseSentinel, KillAgent, PauseAgent, ReloadAgent,
	KillNutcracker, KillHAProxy, PauseHAProxy, RestartHAProxy, KillHAProxyAgent, PauseHAProxyAgent, RestartHAProxyAgent,
	KillConsulClient, KillConsulServer, CutSentinelLinks, CutConsulLink, PlannedFailover, DiskFull,
}

// Options configure a campaign.
type Options struct {
	// Agent is the redis-consul-agent binary every host runs (required).
	Agent string
	// Seed makes the run reproducible: the same seed injects the same faults
	// in the same order (their effects still depend on timing).
	Seed uint64
	// Duration is how long faults are injected (default 3m); the stack's
	// start and the final checks come on top.
	Duration time.Duration
	// Faults are the kinds to inject (default AllFaults).
	Faults []string
	// SettleEvery is how often injection pauses, every fault heals and the
	// stack must converge (default 30s).
	SettleEvery time.Duration
	// ConvergeWithin bounds that convergence (default 45s).
	ConvergeWithin time.Duration
	// MaxConcurrent is how many faults may be active at once (default 2).
	MaxConcurrent int
	// MaxAgentRSS is the resident memory an agent may reach (default 80 MiB).
	MaxAgentRSS int64
	// Dir keeps the processes' files there; empty: a new directory, removed.
	Dir string
	// Progress receives a line per fault, heal and check; nil: quiet.
	Progress io.Writer
}

func (o *Options) defaults() error {
	if o.Agent == "" {
		return errors.New("chaos: no agent binary (Options.Agent)")
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Minute
	}
	if len(o.Faults) == 0 {
		o.Faults = AllFaults
	}
	for _, f := range o.Faults {
		if !slices.Contains(AllFaults, f) {
			return fmt.Errorf("chaos: unknown fault %q (want %s)", f, strings.Join(AllFaults, ", "))
		}
	}
	if o.SettleEvery <= 0 {
		o.SettleEvery = 30 * time.Second
	}
	if o.ConvergeWithin <= 0 {
		o.ConvergeWithin = 45 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 2
	}
	if o.MaxAgentRSS <= 0 {
		o.MaxAgentRSS = 80 << 20
	}
	return nil
}

// campaign is one run: the stack, the random source, the journal of what
// happened and the tallies that make the report.
type campaign struct {
	o     Options
	st    *stack
	rng   *rand.Rand
	began time.Time

	mu         sync.Mutex
	events     []event
	faults     map[string]int
	checks     map[string]int
	violations []Violation
	// named[shard][addr] is when a Sentinel last named addr as the shard's master.
	named map[string]map[string]time.Time
	// namings[shard] is every change of the master a Sentinel names, in order.
	namings map[string][]naming
	// observedAt is when the Sentinel observer last finished a round.
	observedAt time.Time
	// churnedAt is when a Consul server was last killed or restarted.
	churnedAt time.Time
	// kills[addr] are the times the Redis at addr was killed, frozen or restarted.
	kills map[string][]time.Time
	// acks are the writes acknowledged through DNS, the pool or HAProxy.
	acks     []ack
	maxRSS   map[string]int64
	lost     map[string]int
	excused  int
	inFlight int
	inj      *injector
	w        *watchers
}

type event struct {
	at   time.Time
	text string
}

// Run builds the stack, runs the campaign and returns its report. An error
// means the campaign could not run (the stack did not start); violations are
// in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	removeDir := false
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "rca-chaos-")
		if err != nil {
			return nil, fmt.Errorf("chaos dir: %w", err)
		}
		o.Dir, removeDir = d, true
	}
	cp := &campaign{
		o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), began: time.Now(),
		faults: map[string]int{}, checks: map[string]int{}, named: map[string]map[string]time.Time{}, namings: map[string][]naming{},
		kills: map[string][]time.Time{}, maxRSS: map[string]int64{},
	}
	rep := &Report{Seed: o.Seed, Faults: o.Faults, Duration: o.Duration}
	st, err := startStack(ctx, o, cp.say)
	cp.st = st
	if err != nil {
		cp.teardown(removeDir)
		return nil, fmt.Errorf("chaos: start the stack: %w", err)
	}
	cp.run(ctx)
	// A campaign that found something keeps the processes' logs for whoever
	// reads the report; the leftover check then looks for processes only.
	keep := removeDir && len(cp.violations) > 0
	cp.teardown(removeDir && !keep)
	cp.checkLeftovers(removeDir && !keep)
	cp.fill(rep)
	if keep {
		rep.Kept = o.Dir
	}
	return rep, nil
}

// run injects faults for the campaign's duration with the watchers running,
// then heals everything and makes the final checks.
func (cp *campaign) run(ctx context.Context) {
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The first look at the Sentinels comes before the first DNS sample, so
	// that the master at start counts as named.
	cp.observeSentinels(ctx)
	cp.startWatchers(wctx, &wg)
	if err := cp.waitConverged(ctx, "start"); err != nil {
		cp.violate("converge", "the stack did not converge before the first fault: "+err.Error())
	} else {
		cp.inject(ctx)
	}
	cp.healAll()
	if err := cp.waitConverged(ctx, "end"); err != nil {
		cp.violate("converge", "after the last fault healed: "+err.Error())
	}
	// Let writes in flight land, then stop the watchers before the data check.
	stopWatch()
	wg.Wait()
	cp.checkWrites(ctx)
}

func (cp *campaign) say(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	cp.mu.Lock()
	cp.events = append(cp.events, event{at: time.Now(), text: line})
	if len(cp.events) > 20000 {
		cp.events = append(cp.events[:0:0], cp.events[len(cp.events)-10000:]...)
	}
	cp.mu.Unlock()
	if cp.o.Progress != nil {
		fmt.Fprintf(cp.o.Progress, "[%7.1fs] %s\n", time.Since(cp.began).Seconds(), line)
	}
}

// note records an event for timelines without printing it.
func (cp *campaign) note(format string, args ...any) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.events = append(cp.events, event{at: time.Now(), text: fmt.Sprintf(format, args...)})
}

func (cp *campaign) count(check string, n int) {
	cp.mu.Lock()
	cp.checks[check] += n
	cp.mu.Unlock()
}

// violate records a broken invariant with the timeline of the 10 s before it.
func (cp *campaign) violate(invariant, detail string) { cp.violateAt(invariant, detail, time.Now()) }

// violateAt is violate for something that went wrong at a time in the past
// (a write found missing at the end): the timeline is the 10 s before at
// and the 2 s after.
func (cp *campaign) violateAt(invariant, detail string, at time.Time) {
	now := at
	cp.mu.Lock()
	var tl []string
	for _, e := range cp.events {
		if d := now.Sub(e.at); d <= 10*time.Second && d >= -2*time.Second {
			tl = append(tl, fmt.Sprintf("%7.3fs %s", e.at.Sub(cp.began).Seconds(), e.text))
		}
	}
	if len(tl) > 80 {
		tl = tl[len(tl)-80:]
	}
	cp.violations = append(cp.violations, Violation{At: now.Sub(cp.began), Invariant: invariant, Detail: detail, Timeline: tl})
	cp.mu.Unlock()
	cp.say("VIOLATION %s: %s", invariant, detail)
}

func (cp *campaign) teardown(removeDir bool) {
	if cp.st == nil {
		return
	}
	_ = cp.st.c.Close()
	if cp.st.mounted != "" {
		if err := unmountTmpfs(cp.st.mounted); err != nil {
			cp.violate("leftovers", err.Error())
		}
	}
	if removeDir {
		_ = os.RemoveAll(cp.o.Dir)
	}
}
