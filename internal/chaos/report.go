package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Violation is one broken invariant, with what happened in the 10 s before.
type Violation struct {
	At        time.Duration // since the campaign began
	Invariant string
	Detail    string
	Timeline  []string
}

// Report is what a campaign found.
type Report struct {
	Seed     uint64
	Duration time.Duration
	Took     time.Duration
	Faults   []string // the kinds enabled
	// Injected counts the faults injected, by kind.
	Injected map[string]int
	// Checks counts the invariant checks made, by kind.
	Checks     map[string]int
	Violations []Violation
	// Lost counts acknowledged writes missing at the end, by path (dns,
	// proxy for the twemproxy pool, haproxy); Excused those on a Redis killed or frozen after it acknowledged.
	Lost    map[string]int
	Excused int
	// InFailover counts writes lost to a failover Sentinel had under way when
	// they were acknowledged (see the write check); reported, not violations.
	InFailover int
	// MaxAgentRSS is the largest resident memory seen per agent.
	MaxAgentRSS map[string]int64
	// Kept is the directory with every process's log, kept because the
	// campaign found violations (empty otherwise).
	Kept string
}

// Total is the number of faults injected.
func (r *Report) Total() int {
	n := 0
	for _, v := range r.Injected {
		n += v
	}
	return n
}

func (cp *campaign) fill(r *Report) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	r.Took = time.Since(cp.began)
	r.Injected = maps.Clone(cp.faults)
	r.Checks = maps.Clone(cp.checks)
	r.Violations = append([]Violation(nil), cp.violations...)
	r.Lost = maps.Clone(cp.lost)
	if r.Lost == nil {
		r.Lost = map[string]int{}
	}
	r.Excused, r.InFailover = cp.excused, cp.inFlight
	r.MaxAgentRSS = maps.Clone(cp.maxRSS)
}

// Write prints the report for a person: faults, checks, memory, then each
// violation with its timeline, and how to reproduce the run.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "\nchaos campaign: seed %d, faults for %s, took %s\n", r.Seed, r.Duration, r.Took.Round(time.Second))
	fmt.Fprintf(w, "faults injected: %d\n", r.Total())
	// Every kind enabled, so that one the run never injected shows as 0.
	kinds := slices.Concat(r.Faults, slices.Collect(maps.Keys(r.Injected)))
	slices.Sort(kinds)
	for _, k := range slices.Compact(kinds) {
		fmt.Fprintf(w, "  %-22s %d\n", k, r.Injected[k])
	}
	fmt.Fprintln(w, "invariant checks:")
	for _, k := range slices.Sorted(maps.Keys(r.Checks)) {
		fmt.Fprintf(w, "  %-50s %d\n", k, r.Checks[k])
	}
	fmt.Fprintf(w, "acknowledged writes lost: dns %d, proxy %d, haproxy %d (excused: %d on a Redis killed or frozen after acknowledging)\n",
		r.Lost["dns"], r.Lost["proxy"], r.Lost["haproxy"], r.Excused)
	fmt.Fprintf(w, "acknowledged writes lost to a failover Sentinel had under way when they were acknowledged: %d\n", r.InFailover)
	var largest int64
	for _, v := range r.MaxAgentRSS {
		largest = max(largest, v)
	}
	fmt.Fprintf(w, "largest agent RSS: %.1f MiB\n", float64(largest)/(1<<20))
	fmt.Fprintf(w, "violations: %d\n", len(r.Violations))
	for i, v := range r.Violations {
		fmt.Fprintf(w, "\n#%d at %.3fs %s: %s\n", i+1, v.At.Seconds(), v.Invariant, v.Detail)
		for _, line := range v.Timeline {
			fmt.Fprintf(w, "    %s\n", line)
		}
	}
	if r.Kept != "" {
		fmt.Fprintf(w, "\nthe processes' logs are kept in %s\n", r.Kept)
	}
	fmt.Fprintf(w, "\nreproduce: go run ./cmd/rca-chaos --seed %d --duration %s --faults %s\n", r.Seed, r.Duration, strings.Join(r.Faults, ","))
}
