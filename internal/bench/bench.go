// Package bench measures redis-consul-agent against the performance targets
// of docs/BENCHMARKS.md, with the real components (Consul, Redis, Sentinel,
// nutcracker and the agent binary) started through the integration harness
// on loopback. It reports medians and spread over repeated runs; it never
// fails on a slow machine. The `bench` command and TestBenchShort drive it.
//
// Figures (issue 7):
//  1. reaction: first +switch-master → (a) Consul DNS answers only the new
//     master, (b) the first write through twemproxy lands on it, for the
//     agent and for a baseline that behaves like the old Node agent;
//  2. outage: kill -9 of a master with down-after 1s, as a client of
//     twemproxy and of Consul DNS sees it, and the agent's share of it;
//  3. blackout: twemproxy's listener refusing connections during a restart,
//     in supervise and command mode;
//  4. storm: one twemproxy agent following many masters that fail over at
//     once: restarts taken and time until all are applied;
//  5. idle: RSS, CPU and Consul requests of an agent with 1, 10, 50 Redis;
//  6. writes: Consul writes one failover causes across a shard's agents;
//  7. haproxy: kill -9 → first write through HAProxy driven by the agent and
//     through HAProxy's own role check, and the writes each loses once the
//     old master returns as a master.
//  8. follow (same stack and runs as 7): kill -9 → first write on the new
//     master through twemproxy and Consul DNS, the agent's share from the
//     promoted replica answering ROLE master, and the acknowledged writes
//     lost in a planned failover and after an old master returns.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// Figure names for Options.Only.
const (
	FigReaction = "reaction"
	FigOutage   = "outage"
	FigBlackout = "blackout"
	FigStorm    = "storm"
	FigIdle     = "idle"
	FigWrites   = "writes"
)

// Figures lists every figure in the order they run.
var Figures = []string{FigReaction, FigOutage, FigBlackout, FigStorm, FigIdle, FigWrites, FigHAProxy, FigFollow}

// Options configure a benchmark run. Zero values take the defaults of a full
// run, or of the short run when Short is set.
type Options struct {
	// Agent is the redis-consul-agent binary the stack runs (required).
	Agent string
	// Dir holds every process's files; empty: a new directory on tmpfs
	// (/dev/shm) when there is one, else in the temp dir; removed after the
	// run unless Keep. Everything runs on one machine here, so every
	// "host" would share one disk: Sentinel and Redis rewriting their
	// configs and Consul syncing its Raft log at the moment of a failover
	// queue the fsyncs of every other host, which separate hosts would not.
	Dir string
	// ProxyDir holds the twemproxy hosts' config files, which the agent
	// rewrites with fsync on the path being measured: default, a new
	// directory in the temp dir (a disk, not tmpfs, where it is one).
	ProxyDir string
	Keep     bool
	// Only selects figures (see Figures); empty: all.
	Only []string
	// Short is the CI version: few iterations, small storm, short idle.
	Short bool

	// Failovers is the number of measured failovers per twemproxy kind
	// (agent supervise, agent command, baseline): default 20, short 3.
	Failovers int
	// Kills is the number of kill -9 runs of figure 2: default 10, short 1.
	Kills int
	// StormMasters and StormBursts size figure 4: default 200 masters and
	// 3 bursts, short 20 and 1.
	StormMasters, StormBursts int
	// IdleFor is how long figure 5 measures each agent (default 1m, short
	// 5s) and IdleSizes the local Redis counts (default 1, 10, 50; short 1,
	// 10).
	IdleFor   time.Duration
	IdleSizes []int
	// Timeout bounds the whole run (default 60m, short 15m).
	Timeout time.Duration

	// Progress receives one line per step and per measured run.
	Progress io.Writer
	// Command is the command line that reproduces the run, for the report.
	Command string
}

func (o *Options) defaults() {
	def := func(v *int, full, short int) {
		if *v <= 0 {
			*v = full
			if o.Short {
				*v = short
			}
		}
	}
	def(&o.Failovers, 20, 3)
	def(&o.Kills, 10, 1)
	def(&o.StormMasters, 200, 20)
	def(&o.StormBursts, 3, 1)
	if o.IdleFor <= 0 {
		o.IdleFor = time.Minute
		if o.Short {
			o.IdleFor = 5 * time.Second
		}
	}
	if len(o.IdleSizes) == 0 {
		o.IdleSizes = []int{1, 10, 50}
		if o.Short {
			o.IdleSizes = []int{1, 10}
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Minute
		if o.Short {
			o.Timeout = 15 * time.Minute
		}
	}
}

func (o *Options) want(figs ...string) bool {
	if len(o.Only) == 0 {
		return true
	}
	for _, f := range figs {
		if slices.Contains(o.Only, f) {
			return true
		}
	}
	return false
}

// Row is one line of the table: one figure's spread over its runs.
type Row struct {
	Figure string `json:"figure"`
	What   string `json:"what"`
	Target string `json:"target"`
	Summary
	// Verdict is "meets" or "misses" where the brief sets a target.
	Verdict string `json:"verdict,omitempty"`
}

// Report is the result of a run.
type Report struct {
	Date     time.Time     `json:"date"`
	Command  string        `json:"command"`
	Short    bool          `json:"short"`
	Duration time.Duration `json:"duration_ns"`
	Machine  Machine       `json:"machine"`
	Rows     []Row         `json:"rows"`
	// Notes explain figures: what the table cannot say.
	Notes []string `json:"notes"`
	// Errors are the scenarios that could not complete.
	Errors []string `json:"errors,omitempty"`
}

// Machine is where the figures were taken.
type Machine struct {
	CPUs       int    `json:"cpus"`
	Model      string `json:"model"`
	Kernel     string `json:"kernel"`
	MemGiB     int    `json:"mem_gib"`
	Go         string `json:"go"`
	Agent      string `json:"agent"`
	Redis      string `json:"redis"`
	Nutcracker string `json:"nutcracker"`
	Consul     string `json:"consul"`
	LoadStart  string `json:"load_start"`
	LoadEnd    string `json:"load_end"`
	Dirs       string `json:"dirs"`
}

// tempDir is a directory of the run, removed at the end unless kept or
// given by the user.
type tempDir struct {
	path    string
	created bool
	keep    bool
}

func (d tempDir) remove() {
	if d.created && !d.keep {
		os.RemoveAll(d.path)
	}
}

// benchDir returns given, or a new directory under root ("" is the temp
// dir).
func benchDir(given, root, pattern string, keep bool) (tempDir, error) {
	if given != "" {
		return tempDir{path: given}, os.MkdirAll(given, 0o755)
	}
	p, err := os.MkdirTemp(root, pattern)
	if err != nil {
		return tempDir{}, err
	}
	return tempDir{path: p, created: true, keep: keep}, nil
}

// tmpfsRoot is /dev/shm when it is a writable tmpfs, else "" (the temp
// dir).
func tmpfsRoot() string {
	const shm = "/dev/shm"
	if fsType(shm) != "tmpfs" {
		return ""
	}
	f, err := os.CreateTemp(shm, ".rca-bench-probe-")
	if err != nil {
		return ""
	}
	f.Close()
	os.Remove(f.Name())
	return shm
}

// fsType names the file system holding path.
func fsType(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return "?"
	}
	switch uint32(st.Type) {
	case 0x01021994:
		return "tmpfs"
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("fs 0x%x", uint32(st.Type))
}

// Run starts the components, measures the selected figures and tears
// everything down. A scenario that fails is reported in Report.Errors and the
// others still run; the error is non-nil then.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	for _, f := range o.Only {
		if !slices.Contains(Figures, f) {
			return nil, fmt.Errorf("unknown figure %q (want %s)", f, strings.Join(Figures, ", "))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := sandbox.CheckBinaries(); err != nil {
		return nil, err
	}
	if o.Agent == "" {
		return nil, errors.New("no agent binary given (Options.Agent; rca-bench --agent)")
	}
	nut, err := sandbox.Binary("nutcracker")
	if err != nil {
		return nil, err
	}
	dir, err := benchDir(o.Dir, tmpfsRoot(), "rca-bench-", o.Keep)
	if err != nil {
		return nil, err
	}
	defer dir.remove()
	proxyDir, err := benchDir(o.ProxyDir, "", "rca-bench-proxy-", o.Keep)
	if err != nil {
		return nil, err
	}
	defer proxyDir.remove()
	rep := &Report{Date: time.Now().UTC(), Command: o.Command, Short: o.Short, Machine: machine(o.Agent)}
	rep.Machine.Dirs = fmt.Sprintf("processes in %s (%s), twemproxy configs in %s (%s)", dir.path, fsType(dir.path), proxyDir.path, fsType(proxyDir.path))
	began := time.Now()
	c, err := sandbox.New(sandbox.Options{Dir: dir.path, StartTimeout: 90 * time.Second})
	if err != nil {
		return nil, err
	}
	e := &env{o: o, c: c, proxyRoot: proxyDir.path, agentBin: o.Agent, nut: nut, began: began}
	defer e.close()
	e.logf("bench: figures %v; %s", orAll(o.Only), rep.Machine.Dirs)
	if e.consul, err = c.StartConsul(sandbox.ConsulOptions{Name: "consul-bench"}); err != nil {
		return nil, err
	}

	phase := func(name string, f func(ctx context.Context) error) {
		if ctx.Err() != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: not run: %v", name, ctx.Err()))
			return
		}
		m := e.mark()
		pctx, pcancel := context.WithCancel(ctx)
		defer func() {
			pcancel()
			e.endPhase(m)
		}()
		if err := f(pctx); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", name, err))
			e.logf("%s failed: %v", name, err)
			if o.Progress != nil {
				c.DumpLogs(o.Progress)
			}
		}
	}
	if o.want(FigReaction, FigBlackout, FigWrites, FigOutage) {
		phase("reaction stack", func(ctx context.Context) error { return runReaction(ctx, e, rep) })
	}
	if o.want(FigStorm) {
		phase("storm", func(ctx context.Context) error { return runStorm(ctx, e, rep) })
	}
	if o.want(FigIdle) {
		phase("idle", func(ctx context.Context) error { return runIdle(ctx, e, rep) })
	}
	if o.want(FigHAProxy, FigFollow) {
		phase("haproxy", func(ctx context.Context) error { return runHAProxy(ctx, e, rep) })
	}
	rep.Duration = time.Since(began).Round(time.Second)
	rep.Machine.LoadEnd = loadavg()
	e.logf("done in %s", rep.Duration)
	if len(rep.Errors) > 0 {
		return rep, errors.New(strings.Join(rep.Errors, "; "))
	}
	return rep, nil
}

func orAll(only []string) []string {
	if len(only) == 0 {
		return Figures
	}
	return only
}

// runReaction drives figures 1, 3, 6 (failovers) and 2 (kills) on one stack.
func runReaction(ctx context.Context, e *env, rep *Report) error {
	o := e.o
	rs, err := startReaction(ctx, e)
	if err != nil {
		return err
	}
	defer rs.close()
	sup, base, cmd := rs.shards[0], rs.shards[1], rs.shards[2]
	began := time.Now()
	var runErr error
	if o.want(FigReaction) {
		e.logf("reaction: Consul alone, register → DNS, %d times", min(o.Failovers, 10))
		if rs.floorCall, rs.floorDNS, err = consulFloor(ctx, e, min(o.Failovers, 10)); err != nil {
			return err
		}
	}
	if o.want(FigReaction, FigBlackout, FigWrites) {
		e.logf("reaction: %d failovers of each shard, round-robin", o.Failovers)
	rounds:
		for i := range o.Failovers {
			for _, sh := range rs.shards {
				if err := rs.failover(ctx, sh, i); err != nil {
					runErr = fmt.Errorf("failover %d of %s: %w", i+1, sh.shard.Name, err)
					break rounds
				}
			}
		}
		// The last failover's trailing writes (a replica relinking) fall
		// in its window.
		sleep(ctx, 3*time.Second)
	}
	endFailovers := time.Now()
	if runErr == nil && o.want(FigOutage) {
		e.logf("outage: %d kills of the master of %s (down-after 1s)", o.Kills, sup.shard.Name)
		for i := range o.Kills {
			if err := rs.kill(ctx, sup, i); err != nil {
				runErr = fmt.Errorf("kill %d: %w", i+1, err)
				break
			}
		}
		sleep(ctx, 3*time.Second)
	}
	endKills := time.Now()
	if rs.refailovers > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("Sentinel failed a shard over a second time on its own, about a second after a measured switch, %d time(s): with down-after 1s all three Sentinels judged the fresh master down right after re-creating their links to it, although its log shows it answering throughout. The measured run keeps its figures; the benchmark follows the shard to the new master.", rs.refailovers))
	}

	if o.want(FigReaction) {
		var dns durations
		double, doubleLongest := 0, time.Duration(0)
		for _, sh := range rs.shards {
			dns.xs = append(dns.xs, sh.dns.xs...)
			dns.failed += sh.dns.failed
			double += sh.dnsDouble
			doubleLongest = max(doubleLongest, sh.dnsDoubleLongest)
		}
		baseOwn := base.landOwn.summary()
		rep.Rows = append(rep.Rows,
			judged("1a", "+switch-master → Consul DNS answers only the new master", "p50 ≤ 20 ms", dns.summary(), func(s Summary) bool { return s.P50 <= 20 }),
			plain("1a", "  agent's own log: its +switch-master → new master registered", "", rs.consulApplied(began).summary()),
			plain("1a", "  agent's own log: the Consul agent-API register call of it", "", rs.consulRegisterCalls(began).summary()),
			plain("1a", "  floor, Consul alone: agent-API register call", "", rs.floorCall.summary()),
			plain("1a", "  floor, Consul alone: register → DNS answers it", "", rs.floorDNS.summary()),
			judged("1b", "+switch-master → first write via twemproxy lands on new master: agent, supervise", "p50 ≤ 15 ms and < baseline",
				sup.land.summary(), func(s Summary) bool { return s.P50 <= 15 && s.P50 < baseOwn.P50 }),
		)
		for _, k := range []struct{ key, what string }{
			{"reaction", "agent's own log: its +switch-master → every pool answers"},
			{"render", "agent's own log: render"},
			{"validate_write", "agent's own log: validate (nutcracker --test-conf) + atomic write"},
			{"restart", "agent's own log: restart, stop → every pool answers PING"},
		} {
			rep.Rows = append(rep.Rows, plain("1b", "  "+k.what, "", durationsOf(rs.applied("sup"), k.key, began).summary()))
		}
		rs.floorMu.Lock()
		rep.Rows = append(rep.Rows,
			plain("1b", "  floor, bench process, same disk, quiet: nutcracker --test-conf", "", rs.floorCheck.summary()),
			plain("1b", "  floor, bench process, same disk, quiet: atomic write with fsync", "", rs.floorWrite.summary()),
			plain("1b", "  floor, same, at the switch of another shard: --test-conf", "", rs.floorBusyCheck.summary()),
			plain("1b", "  floor, same, at the switch of another shard: atomic write", "", rs.floorBusyWrite.summary()),
		)
		rs.floorMu.Unlock()
		rep.Rows = append(rep.Rows,
			plain("1b", "  same, agent, restart mode command", "", cmd.land.summary()),
			plain("1b", "  same, BASELINE old Node agent, from the first +switch-master", "", base.land.summary()),
			plain("1b", "  same, BASELINE, from the +switch-master of its one Sentinel", "≈ 20 ms in the brief", baseOwn),
			plain("1b", "  how late its one Sentinel published, after the first", "", base.ownLag.summary()),
		)
		agentP50 := sup.land.summary().P50
		if agentP50 > 0 && !math.IsNaN(agentP50) && !math.IsNaN(baseOwn.P50) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("1b: BASELINE p50 / agent p50 = %.2f counting from the baseline's own Sentinel (%.1f ms vs %.1f ms), %.2f counting from the first +switch-master as for the agent (%.1f ms).",
				baseOwn.P50/agentP50, baseOwn.P50, agentP50, base.land.summary().P50/agentP50, base.land.summary().P50))
		}
		if f := base.land.failed; f > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("1b: the BASELINE's kill-and-start lost its race %d time(s) in %d: the new nutcracker found a port still bound, exited, and the pool stayed down until restarted by hand. Those runs are not in its figures.", f, f+len(base.land.xs)))
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("1a: in %d of %d failovers Consul DNS answered two addresses for the shard's master name for a moment (longest %.1f ms): the new master's agent registered before the old master's agent withdrew it. The DNS client of the kill runs saw at most %d address(es) in one answer.",
			double, len(dns.xs)+dns.failed, ms(doubleLongest), rs.killsDNSMax))
	}
	if o.want(FigOutage) {
		rep.Rows = append(rep.Rows,
			plain("2a", "kill -9 master → first write via twemproxy lands on new master", "", rs.outTwem.summary()),
			plain("2a", "  agent's share: the promoted replica answers ROLE master → that write", "", rs.agentTwem.summary()),
			plain("2b", "kill -9 master → first write via master.redis.service.consul", "", rs.outDNS.summary()),
			plain("2b", "  agent's share: the promoted replica answers ROLE master → that write", "", rs.agentDNS.summary()),
			plain("2", "  Sentinel's share: kill → the promoted replica answers ROLE master (polled every 1 ms)", "", rs.sentinelShare.summary()),
			plain("2", "  kill → first +switch-master", "", rs.switchAfter.summary()),
		)
	}
	if o.want(FigBlackout) {
		le10 := func(s Summary) bool { return s.P50 <= 10 }
		rep.Rows = append(rep.Rows,
			judged("3", "twemproxy listener refusing during a restart: supervise", "≤ 10 ms", sup.blackout.summary(), le10),
			plain("3", "  agent's own log: restart → first pool answers PING, supervise", "", durationsOf(rs.applied("sup"), "blackout", began).summary()),
			judged("3", "  same, restart mode command (stop, wait, start script)", "≤ 10 ms", cmd.blackout.summary(), le10),
			plain("3", "  agent's own log: restart → first pool answers PING, command", "", durationsOf(rs.applied("cmd"), "blackout", began).summary()),
			plain("3", "  same, BASELINE kill-and-start script", "", base.blackout.summary()),
		)
	}
	if o.want(FigWrites) {
		var agents []*agentProc
		for _, sh := range rs.shards {
			agents = append(agents, sh.agents...)
		}
		var chg, all, kchg values
		chg.unit, all.unit, kchg.unit = "writes", "requests", "writes"
		kinds := map[string]int{}
		for _, sh := range rs.shards {
			for _, w := range writesPerTrigger(sh, sh.agents, false, endFailovers) {
				chg.add(float64(changes(w)))
				all.add(float64(total(w)))
				for k, v := range w {
					kinds[k] += v
				}
			}
		}
		for _, w := range writesPerTrigger(sup, sup.agents, true, endKills) {
			kchg.add(float64(changes(w)))
		}
		var pchg values
		pchg.unit = "writes"
		for _, sh := range []*rxShard{sup, cmd} {
			for _, w := range writesPerTrigger(sh, []*agentProc{rs.proxyAgent}, false, endFailovers) {
				pchg.add(float64(changes(w)))
			}
		}
		rep.Rows = append(rep.Rows,
			plain("6", "Consul writes per failover, the shard's 3 agents together", "", chg.summary()),
			plain("6", "  all their Consul requests in that window (with TTL refreshes, reads)", "", all.summary()),
			plain("6", "  the twemproxy agent's writes per failover it follows", "", pchg.summary()),
		)
		if o.want(FigOutage) && len(kchg.xs) > 0 {
			rep.Rows = append(rep.Rows, plain("6", "  per kill -9 (the killed node restarts and rejoins)", "", kchg.summary()))
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("6: a write is a register, a deregister, or a TTL update that changes the check status or its output (the registrar writes status and reason in one TTL update; a tag change writes the check, then registers; a fresh registration registers, then sets the status); the registrar reads each change back from the catalog (counted as reads); requests by kind over all failover windows: %v.", kinds))
		if note := crossCheck(ctx, append(agents, rs.proxyAgent)); note != "" {
			rep.Notes = append(rep.Notes, note)
		}
	}
	return runErr
}

// crossCheck compares the agents' own count of Consul writes with the
// counting proxies'.
func crossCheck(ctx context.Context, agents []*agentProc) string {
	var metric float64
	proxied := 0
	now := time.Now()
	for _, a := range agents {
		v, err := scrape(ctx, a.URL("/metrics"), "redis_consul_agent_consul_writes_total", nil)
		if err != nil {
			return ""
		}
		metric += v
		byKind := a.counter.count(a.started, now.Add(time.Second))
		proxied += total(byKind) - byKind[reqRead]
	}
	return fmt.Sprintf("6: cross-check over the whole run: the agents' redis_consul_agent_consul_writes_total sum to %.0f, the counting proxies saw %d writes.", metric, proxied)
}

func runStorm(ctx context.Context, e *env, rep *Report) error {
	o := e.o
	st, err := startStorm(ctx, e, o.StormMasters)
	if err != nil {
		return err
	}
	defer st.close()
	var runErr error
	for b := range o.StormBursts {
		if runErr = st.burst(ctx, b); runErr != nil {
			break
		}
	}
	n := o.StormMasters
	for _, sp := range st.proxies {
		sp.spread.unit, sp.restarts.unit, sp.fromFirst.unit, sp.fromLast.unit = "ms", "restarts", "ms", "ms"
	}
	nat, dense := st.proxies[0], st.proxies[1]
	rep.Rows = append(rep.Rows,
		plain("4", fmt.Sprintf("storm: %d SENTINEL FAILOVERs at once → spread of their +switch-master", n), "", nat.spread.summary()),
		plain("4", "  natural: restarts the agent took per burst", "", nat.restarts.summary()),
		plain("4", "  natural: first +switch-master → every pool writes to its new master", "", nat.fromFirst.summary()),
		plain("4", "  natural: last +switch-master → every pool writes to its new master", "", nat.fromLast.summary()),
		judged("4", fmt.Sprintf("  all %d switches seen at once (agent resumed): restarts per burst", n), "≤ 2", dense.restarts.summary(), func(s Summary) bool { return s.Max <= 2 }),
		judged("4", "  all seen at once: resume → every pool writes to its new master", "≤ 1000 ms", dense.fromFirst.summary(), func(s Summary) bool { return s.Max <= 1000 }),
	)
	runs := readLog(dense.agent.LogPath(), "config applied", "reason=rewrite")
	for _, k := range []struct{ key, what string }{
		{"run", "agent's own log, at once: one pipeline run"},
		{"render", "agent's own log, at once: render"},
		{"validate_write", "agent's own log, at once: validate + atomic write"},
		{"restart", "agent's own log, at once: restart, stop → every pool answers PING"},
	} {
		rep.Rows = append(rep.Rows, plain("4", "  "+k.what, "", durationsOf(runs, k.key, time.Time{}).summary()))
	}
	if n := len(readLog(dense.agent.LogPath(), "sentinel link down")); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("4: frozen for longer than its 3 s link check, the \"dense\" agent dropped its Sentinel links on resume (%d link-down lines) and learnt the switches by reconnecting and polling; that relink is inside its resume → applied figure.", n))
	}
	for _, sp := range st.proxies {
		if sp.rollbacks > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("4: the %s agent rolled back %d times during the bursts.", sp.name, sp.rollbacks))
		}
	}
	return runErr
}

func runIdle(ctx context.Context, e *env, rep *Report) error {
	o := e.o
	st, err := startIdle(ctx, e, slices.Max(o.IdleSizes))
	if err != nil {
		return err
	}
	warmup := 10 * time.Second
	if o.Short {
		warmup = 2 * time.Second
	}
	var runErr error
	for _, size := range o.IdleSizes {
		res, err := st.measure(ctx, size, warmup, o.IdleFor)
		if err != nil {
			runErr = fmt.Errorf("idle %d: %w", size, err)
			break
		}
		rep.Rows = append(rep.Rows,
			judged("5", fmt.Sprintf("idle, %d local Redis: RSS (1 s samples)", size), "≤ 30 MB", res.rssMB.summary(), func(s Summary) bool { return s.Max <= 30 }),
			judged("5", fmt.Sprintf("  CPU (%s windows; mean %.2f%%)", res.window.Round(100*time.Millisecond), res.meanCPU), "≤ 0.5 % core", res.cpuPct.summary(), func(Summary) bool { return res.meanCPU <= 0.5 }),
			judged("5", fmt.Sprintf("  Consul requests/s (mean %.2f)", res.meanReqs), "≤ 2/s", res.reqsPS.summary(), func(Summary) bool { return res.meanReqs <= 2 }),
		)
		rep.Notes = append(rep.Notes, fmt.Sprintf("5: %d Redis: Consul requests by kind over %s: %v.", size, res.measured.Round(time.Second), res.byKind))
	}
	return runErr
}

func plain(fig, what, target string, s Summary) Row {
	return Row{Figure: fig, What: what, Target: target, Summary: s}
}

// judged is a row whose target the brief sets; a row without samples gets no
// verdict.
func judged(fig, what, target string, s Summary, ok func(Summary) bool) Row {
	r := plain(fig, what, target, s)
	if s.N == 0 {
		return r
	}
	r.Verdict = "misses"
	if ok(s) {
		r.Verdict = "meets"
	}
	return r
}

// WriteTable prints the report as an aligned text table, then the notes.
func (r *Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fig\twhat\ttarget\tn\tp50\tp95\tmin\tmax\tunit\tverdict")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.Figure, row.What, dash(row.Target), count(row.Summary),
			num(row.P50), num(row.P95), num(row.Min), num(row.Max), row.Unit, dash(row.Verdict))
	}
	tw.Flush()
	r.writeNotes(w, "")
}

// WriteMarkdown prints the report as a Markdown table, for docs/BENCHMARKS.md.
func (r *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| fig | what | target | n | p50 | p95 | min | max | unit | verdict |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---|---|")
	for _, row := range r.Rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.Figure, strings.TrimSpace(row.What), dash(row.Target),
			count(row.Summary), num(row.P50), num(row.P95), num(row.Min), num(row.Max), row.Unit, dash(row.Verdict))
	}
	fmt.Fprintln(w)
	r.writeNotes(w, "- ")
}

func (r *Report) writeNotes(w io.Writer, bullet string) {
	m := r.Machine
	fmt.Fprintf(w, "\n%s%s; %d CPUs (%s), %d GiB, kernel %s; load %s → %s\n", bullet, r.Date.Format("2006-01-02 15:04 MST"),
		m.CPUs, m.Model, m.MemGiB, m.Kernel, m.LoadStart, m.LoadEnd)
	fmt.Fprintf(w, "%s%s; %s; %s; %s; %s\n", bullet, m.Agent, m.Go, m.Redis, m.Nutcracker, m.Consul)
	if m.Dirs != "" {
		fmt.Fprintf(w, "%s%s\n", bullet, m.Dirs)
	}
	if r.Command != "" {
		fmt.Fprintf(w, "%scommand: %s (took %s)\n", bullet, r.Command, r.Duration)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "%s%s\n", bullet, n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "%sERROR: %s\n", bullet, e)
	}
}

// WriteJSON prints the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// MarshalJSON writes NaN (no samples) as null.
func (s Summary) MarshalJSON() ([]byte, error) {
	f := func(v float64) any {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return v
	}
	return json.Marshal(map[string]any{"n": s.N, "p50": f(s.P50), "p95": f(s.P95), "min": f(s.Min), "max": f(s.Max), "failed": s.Failed, "unit": s.Unit})
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e6:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func count(s Summary) string {
	if s.Failed > 0 {
		return fmt.Sprintf("%d (+%d missing)", s.N, s.Failed)
	}
	return fmt.Sprint(s.N)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// machine describes the host and the component versions.
func machine(agent string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.MemGiB = (kb + 512*1024) / (1024 * 1024)
	}
	first := func(bin string, args ...string) string {
		path, err := sandbox.Binary(bin)
		if err != nil {
			return bin + " ?"
		}
		out, _ := exec.Command(path, args...).CombinedOutput()
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	m.Redis = first("redis-server", "--version")
	m.Nutcracker = first("nutcracker", "--version")
	m.Consul = first("consul", "version")
	if out, err := exec.Command(agent, "version").Output(); err == nil {
		m.Agent = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
