package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// The order of a failover's events with act_on: promotion: kill -9 of a
// master, and the agents move DNS and twemproxy before any Sentinel
// announces the switch. The helpers of this file start with "po".

// TestPromotionMovesDNSAndTwemproxyBeforeAnnouncement: the real agent
// beside every Redis and beside a supervised nutcracker; kill -9 of the
// master; a test subscriber on every Sentinel records the first
// +switch-master. With act_on: promotion, before that event arrived DNS
// (<name>-master, sampled every 5 ms) answered only the new master, the
// config file named it, and the agents' journals (/v1/status) show the
// promotion, the Consul tag and the twemproxy restart. The rewrite used the
// file pre-staged at +selected-slave: no nutcracker --test-conf ran between
// the promotion and the restart, and no staged file is left afterwards.
// With act_on: announcement the same run must fail the order (the test has
// teeth).
func TestPromotionMovesDNSAndTwemproxyBeforeAnnouncement(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	t.Run("promotion", func(t *testing.T) {
		o := poRun(t, "promotion")
		if !o.dns.Before(o.firstSwitch) || !o.file.Before(o.firstSwitch) {
			t.Errorf("with act_on: promotion, DNS moved at %s and the file at %s, the first +switch-master arrived at %s: want both before it",
				o.dns.Format(poClock), o.file.Format(poClock), o.firstSwitch.Format(poClock))
		}
		for _, e := range o.errs {
			t.Error(e)
		}
	})
	t.Run("announcement", func(t *testing.T) {
		o := poRun(t, "announcement")
		if o.dns.Before(o.firstSwitch) && o.file.Before(o.firstSwitch) {
			t.Errorf("with act_on: announcement DNS and the file moved before the first +switch-master: the test cannot tell the promotion truth works")
		}
	})
}

const poClock = "15:04:05.000000"

// poOrder is what one run observed, in the test's clock.
type poOrder struct {
	firstSwitch time.Time // the first +switch-master any Sentinel published
	dns         time.Time // the first sample of DNS answering only the new master
	file        time.Time // the first read of the config naming the new master
	errs        []string  // the order of the agents' journals, checked with act_on: promotion
}

// poRun runs one kill -9 failover with the agents' failover.act_on set to actOn.
func poRun(t *testing.T, actOn string) poOrder {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nut, testConfLog := poNutcracker(t)
	e := newPFEnvNut(t, ctx, map[string]any{"act_on": actOn}, sandbox.ShardOptions{}, nil, nut)
	old := e.shard.Master

	first := poFirstSwitch(ctx, t, e.shard)
	sctx, stopSampling := context.WithCancel(ctx)
	dns, file := &poSamples{}, &poSamples{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); dns.run(sctx, 5*time.Millisecond, e.dnsAnswer) }()
	go func() { defer wg.Done(); file.run(sctx, 2*time.Millisecond, e.fileServers) }()
	defer func() { stopSampling(); wg.Wait() }()
	if err := sandbox.Poll(ctx, "the samplers' first readings", func(context.Context) error {
		if dns.len() == 0 || file.len() == 0 {
			return fmt.Errorf("no sample yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	var sw sentinelEvent
	select {
	case sw = <-first:
	case <-ctx.Done():
		t.Fatal("no +switch-master from any Sentinel")
	}
	newAddr, err := e.shard.WaitFailover(ctx, old.Addr())
	if err != nil {
		t.Fatal(err)
	}
	newIP := e.shard.Node(newAddr).IP()
	if err := sandbox.Poll(ctx, "DNS and the config file at the new master", func(context.Context) error {
		if dns.first(newIP).IsZero() || file.first(newAddr).IsZero() {
			return fmt.Errorf("DNS %q, file %q", dns.last(), file.last())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stopSampling()
	wg.Wait()
	if two := dns.multi(); two != "" {
		t.Errorf("DNS answered two masters: %s", two)
	}
	o := poOrder{firstSwitch: sw.at, dns: dns.first(newIP), file: file.first(newAddr)}
	t.Logf("act_on=%s: kill -9 → DNS only %s %s, config names it %s, first +switch-master (from %s) %s",
		actOn, newAddr, o.dns.Sub(killed).Round(time.Millisecond), o.file.Sub(killed).Round(time.Millisecond),
		sw.s.Addr(), o.firstSwitch.Sub(killed).Round(time.Millisecond))
	if actOn == "promotion" {
		o.errs = poJournals(ctx, t, e, newAddr, o.firstSwitch, testConfLog)
	}
	return o
}

// poFirstSwitch sends the first +switch-master any Sentinel of shard
// publishes.
func poFirstSwitch(ctx context.Context, t *testing.T, shard *sandbox.Shard) <-chan sentinelEvent {
	return firstSentinelEvent(ctx, t, shard, func(sentinelEvent) bool { return true }, "+switch-master")
}

// poSamples is a time series of one reading: each change with its time.
type poSamples struct {
	mu      sync.Mutex
	changes []poSample
	n       int
}

type poSample struct {
	at  time.Time
	val string
}

// run reads f every period until ctx ends (at most 100000 readings) and
// records each reading that differs from the one before.
func (s *poSamples) run(ctx context.Context, period time.Duration, f func(context.Context) string) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		v := f(rctx)
		cancel()
		if ctx.Err() != nil {
			return // a reading cut short by the end
		}
		at := time.Now()
		s.mu.Lock()
		if s.n == 0 || s.changes[len(s.changes)-1].val != v {
			s.changes = append(s.changes, poSample{at: at, val: v})
		}
		s.n++
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func (s *poSamples) len() int { s.mu.Lock(); defer s.mu.Unlock(); return s.n }

func (s *poSamples) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.changes) == 0 {
		return ""
	}
	return s.changes[len(s.changes)-1].val
}

// first is when a reading was exactly val for the first time (zero: never).
func (s *poSamples) first(val string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.changes {
		if c.val == val {
			return c.at
		}
	}
	return time.Time{}
}

// multi is a reading that held more than one address, "" if none did.
func (s *poSamples) multi() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.changes {
		if strings.Contains(c.val, ",") {
			return c.at.Format(poClock) + " " + c.val
		}
	}
	return ""
}

// dnsAnswer is the A records of <name>-master, comma-separated and sorted
// as Consul answered them, or the error.
func (e *pfEnv) dnsAnswer(ctx context.Context) string {
	ips, err := e.consul.LookupA(ctx, e.shard.Name+"-master.redis.service.consul")
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.Join(ips, ",")
}

// fileServers is the server addresses of the managed nutcracker config.
func (e *pfEnv) fileServers(context.Context) string {
	b, err := os.ReadFile(e.conf)
	if err != nil {
		return "error: " + err.Error()
	}
	pools, err := twemproxy.Pools(b)
	if err != nil {
		return "error: " + err.Error()
	}
	var out []string
	for _, p := range pools {
		for _, s := range p.Servers {
			out = append(out, s.Addr())
		}
	}
	return strings.Join(out, ",")
}

// poNutcracker is a nutcracker that logs the time (Unix ns) of every
// --test-conf run to a file, then runs the installed one.
func poNutcracker(t *testing.T) (bin, log string) {
	t.Helper()
	real, err := sandbox.Binary("nutcracker")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, log = filepath.Join(dir, "nutcracker"), filepath.Join(dir, "test-conf.log")
	script := fmt.Sprintf("#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = --test-conf ]; then date +%%s%%N >> %q; fi; done\nexec %q \"$@\"\n", log, real)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, log
}

// poStatus is the part of /v1/status these tests read.
type poStatus struct {
	Events []struct {
		Time    time.Time `json:"time"`
		Kind    string    `json:"kind"`
		Type    string    `json:"type"`
		Subject string    `json:"subject"`
		Detail  string    `json:"detail"`
	} `json:"events"`
	Failovers []struct {
		Master      string    `json:"master"`
		To          string    `json:"to"`
		At          time.Time `json:"at"`
		ConsulAt    time.Time `json:"consul_at"`
		TwemproxyAt time.Time `json:"twemproxy_at"`
	} `json:"failovers"`
}

func poGetStatus(ctx context.Context, a *sandbox.Agent) (poStatus, error) {
	var st poStatus
	body, err := pfGet(ctx, a, "/v1/status")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(body), &st)
}

// poJournals checks the agents' own story against the first +switch-master
// (at): the proxy host's agent learnt the promotion and restarted nutcracker
// on it before at, with the pre-staged file and no --test-conf after the
// promotion; the agent beside the new master tagged it before at; no staged
// file is left in the config directory. It returns what does not hold.
func poJournals(ctx context.Context, t *testing.T, e *pfEnv, newAddr string, at time.Time, testConfLog string) []string {
	t.Helper()
	var errs []string
	var promoted, restarted time.Time
	if err := sandbox.Poll(ctx, "the proxy host's journal of the failover", func(ctx context.Context) error {
		st, err := poGetStatus(ctx, e.proxy)
		if err != nil {
			return err
		}
		promoted, restarted = time.Time{}, time.Time{}
		for _, ev := range st.Events {
			if ev.Kind == "truth" && ev.Type == "promotion" && ev.Subject == e.shard.Name && strings.HasPrefix(ev.Detail, newAddr+" ") {
				promoted = ev.Time
			}
			if ev.Kind == "twemproxy" && ev.Type == "rewrite" && !promoted.IsZero() && restarted.IsZero() {
				restarted = ev.Time
				if !strings.Contains(ev.Detail, "staged and validated before the promotion") {
					errs = append(errs, "the promotion's rewrite did not use a pre-staged file: "+ev.Detail)
				}
			}
		}
		for _, f := range st.Failovers {
			if f.Master == e.shard.Name && f.To == newAddr && !f.TwemproxyAt.IsZero() && !f.TwemproxyAt.Before(at) {
				errs = append(errs, fmt.Sprintf("the proxy host's timeline: twemproxy applied at %s, not before the first +switch-master at %s",
					f.TwemproxyAt.Format(poClock), at.Format(poClock)))
			}
		}
		if promoted.IsZero() || restarted.IsZero() {
			return fmt.Errorf("promotion %v, rewrite after it %v", !promoted.IsZero(), !restarted.IsZero())
		}
		return nil
	}); err != nil {
		return append(errs, err.Error())
	}
	if !promoted.Before(at) || !restarted.Before(at) {
		errs = append(errs, fmt.Sprintf("the proxy host's journal: promotion %s, rewrite %s, first +switch-master %s",
			promoted.Format(poClock), restarted.Format(poClock), at.Format(poClock)))
	}
	for _, ns := range poTestConfRuns(t, testConfLog) {
		if ns.After(promoted) && ns.Before(restarted) {
			errs = append(errs, fmt.Sprintf("nutcracker --test-conf ran at %s, between the promotion (%s) and the restart (%s)",
				ns.Format(poClock), promoted.Format(poClock), restarted.Format(poClock)))
		}
	}
	st, err := poGetStatus(ctx, e.agents[newAddr])
	if err != nil {
		return append(errs, err.Error())
	}
	tagged := false
	for _, f := range st.Failovers {
		if f.Master == e.shard.Name && f.To == newAddr && !f.ConsulAt.IsZero() {
			tagged = true
			if !f.ConsulAt.Before(at) {
				errs = append(errs, fmt.Sprintf("the new master's agent tagged it at %s, not before %s", f.ConsulAt.Format(poClock), at.Format(poClock)))
			}
		}
	}
	if !tagged {
		errs = append(errs, "the new master's agent has no failover to "+newAddr+" tagged in Consul")
	}
	if err := sandbox.Poll(ctx, "no staged file left in the config directory", func(context.Context) error {
		return poNoStagedFile(e.conf)
	}); err != nil {
		errs = append(errs, err.Error())
	}
	return errs
}

// poTestConfRuns reads the times the wrapper logged.
func poTestConfRuns(t *testing.T, path string) []time.Time {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the --test-conf log: %v", err)
	}
	defer f.Close()
	var out []time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ns, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			t.Fatalf("the --test-conf log: %q: %v", sc.Text(), err)
		}
		out = append(out, time.Unix(0, ns))
	}
	return out
}

// poNoStagedFile fails while a temp file of conf (a staged candidate's
// file, .<base>.rca-tmp-*) is in its directory.
func poNoStagedFile(conf string) error {
	left, err := filepath.Glob(filepath.Join(filepath.Dir(conf), "."+filepath.Base(conf)+".rca-tmp-*"))
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("staged files left: %s", strings.Join(left, ", "))
	}
	return nil
}
