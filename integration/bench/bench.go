// Package bench measures redis-consul-agent against the performance targets
// of DESIGN.md §11, with the real components (Consul, Redis, Sentinel,
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
//  6. writes: Consul writes one failover causes across a shard's agents.
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
	"text/tabwriter"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
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
var Figures = []string{FigReaction, FigOutage, FigBlackout, FigStorm, FigIdle, FigWrites}

// Options configure a benchmark run. Zero values take the defaults of a full
// run, or of the short run when Short is set.
type Options struct {
	// Agent is the redis-consul-agent binary; empty: harness.AgentBinary.
	Agent string
	// Dir holds every process's files; empty: a temp dir, removed after
	// the run unless Keep.
	Dir  string
	Keep bool
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
	// Verdict is "meets" or "misses" where §11 sets a target.
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
	if err := harness.CheckBinaries(); err != nil {
		return nil, err
	}
	if o.Agent == "" {
		bin, err := harness.AgentBinary()
		if err != nil {
			return nil, err
		}
		o.Agent = bin
	}
	nut, err := harness.Binary("nutcracker")
	if err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "rca-bench-"); err != nil {
			return nil, err
		}
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	rep := &Report{Date: time.Now().UTC(), Command: o.Command, Short: o.Short, Machine: machine(o.Agent)}
	began := time.Now()
	c, err := harness.New(harness.Options{Dir: dir, StartTimeout: 90 * time.Second})
	if err != nil {
		return nil, err
	}
	e := &env{o: o, c: c, agentBin: o.Agent, nut: nut, began: began}
	defer e.close()
	e.logf("bench in %s: figures %v", dir, orAll(o.Only))
	if e.consul, err = c.StartConsul(harness.ConsulOptions{Name: "consul-bench"}); err != nil {
		return nil, err
	}

	phase := func(name string, f func() error) {
		if ctx.Err() != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: not run: %v", name, ctx.Err()))
			return
		}
		if err := f(); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", name, err))
			e.logf("%s failed: %v", name, err)
			if o.Progress != nil {
				c.DumpLogs(o.Progress)
			}
		}
	}
	if o.want(FigReaction, FigBlackout, FigWrites, FigOutage) {
		phase("reaction stack", func() error { return runReaction(ctx, e, rep) })
	}
	if o.want(FigStorm) {
		phase("storm", func() error { return runStorm(ctx, e, rep) })
	}
	if o.want(FigIdle) {
		phase("idle", func() error { return runIdle(ctx, e, rep) })
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
	var runErr error
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

	if o.want(FigReaction) {
		var dns durations
		for _, sh := range rs.shards {
			dns.xs = append(dns.xs, sh.dns.xs...)
			dns.failed += sh.dns.failed
		}
		agentP50 := sup.land.summary().P50
		baseP50 := base.land.summary().P50
		rep.Rows = append(rep.Rows,
			judged("1a", "+switch-master → Consul DNS answers only the new master", "p50 ≤ 20 ms", dns.summary(), func(s Summary) bool { return s.P50 <= 20 }),
			judged("1b", "+switch-master → first write via twemproxy lands on new master: agent, supervise", "p50 ≤ 15 ms and < baseline",
				sup.land.summary(), func(s Summary) bool { return s.P50 <= 15 && s.P50 < baseP50 }),
			plain("1b", "  same, agent, restart mode command", "", cmd.land.summary()),
			plain("1b", "  same, BASELINE: old Node agent (1 Sentinel, naive rewrite, kill-and-start)", "≈ 20 ms in §11", base.land.summary()),
		)
		if agentP50 > 0 && !math.IsNaN(agentP50) && !math.IsNaN(baseP50) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("1b: baseline p50 / agent p50 = %.2f (baseline %.1f ms, agent %.1f ms); the agent validates with nutcracker --test-conf, writes atomically with fsync and probes before it counts a restart as done.",
				baseP50/agentP50, baseP50, agentP50))
		}
		maxAns := max(sup.dnsMaxAnswers, base.dnsMaxAnswers, cmd.dnsMaxAnswers, rs.killsDNSMax)
		rep.Notes = append(rep.Notes, fmt.Sprintf("1a: largest Consul DNS answer seen for a shard's master name during the failovers and kills: %d address(es) (2 would be a split brain).", maxAns))
	}
	if o.want(FigOutage) {
		rep.Rows = append(rep.Rows,
			plain("2a", "kill -9 master → first write via twemproxy lands on new master", "", rs.outTwem.summary()),
			plain("2a", "  agent's share: +switch-master → that write", "", rs.agentTwem.summary()),
			plain("2b", "kill -9 master → first write via master.redis.service.consul", "", rs.outDNS.summary()),
			plain("2b", "  agent's share: +switch-master → that write", "", rs.agentDNS.summary()),
			plain("2", "  Sentinel's share: kill → first +switch-master", "", rs.sentinelShare.summary()),
		)
	}
	if o.want(FigBlackout) {
		le10 := func(s Summary) bool { return s.P50 <= 10 }
		rep.Rows = append(rep.Rows,
			judged("3", "twemproxy listener refusing during a restart: supervise", "≤ 10 ms", sup.blackout.summary(), le10),
			judged("3", "  same, restart mode command (stop, wait, start script)", "≤ 10 ms", cmd.blackout.summary(), le10),
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
		rep.Notes = append(rep.Notes, fmt.Sprintf("6: a write is a register, a deregister, a TTL update that changes the check status, or the TTL update that sets the output right after a register; requests by kind over all failover windows: %v.", kinds))
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
	st.spread.unit, st.restarts.unit, st.fromFirst.unit, st.fromLast.unit = "ms", "restarts", "ms", "ms"
	rep.Rows = append(rep.Rows,
		plain("4", fmt.Sprintf("storm: %d SENTINEL FAILOVERs at once → spread of their +switch-master", n), "(within 100 ms)", st.spread.summary()),
		judged("4", "  twemproxy restarts the agent took per burst", "≤ 2", st.restarts.summary(), func(s Summary) bool { return s.Max <= 2 }),
		judged("4", "  first +switch-master → every pool writes to its new master", "≤ 1000 ms", st.fromFirst.summary(), func(s Summary) bool { return s.Max <= 1000 }),
		plain("4", "  last +switch-master → every pool writes to its new master", "", st.fromLast.summary()),
	)
	if st.rollbacks > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("4: the agent rolled back %d times during the bursts.", st.rollbacks))
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
			judged("5", fmt.Sprintf("  CPU (%s windows; mean %.2f%%)", res.window, res.meanCPU), "≤ 0.5 % core", res.cpuPct.summary(), func(Summary) bool { return res.meanCPU <= 0.5 }),
			judged("5", fmt.Sprintf("  Consul requests/s (mean %.2f)", res.meanReqs), "≤ 2/s", res.reqsPS.summary(), func(Summary) bool { return res.meanReqs <= 2 }),
		)
		rep.Notes = append(rep.Notes, fmt.Sprintf("5: %d Redis: Consul requests by kind over %s: %v.", size, o.IdleFor, res.byKind))
	}
	return runErr
}

func plain(fig, what, target string, s Summary) Row {
	return Row{Figure: fig, What: what, Target: target, Summary: s}
}

// judged is a row whose target §11 sets; a row without samples gets no
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
		return fmt.Sprintf("%d (+%d failed)", s.N, s.Failed)
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
		path, err := harness.Binary(bin)
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
