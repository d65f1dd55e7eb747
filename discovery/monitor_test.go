package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	dto "github.com/prometheus/client_model/go"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// monEnv is a Monitor watching fake Sentinels that monitor "m", whose
// nodes a (the master), b and c are fake Redis servers.
type monEnv struct {
	t         *testing.T
	sentinels []*fakeNode
	a, b, c   *fakeNode
	mon       *Monitor
	metrics   *telemetry.Metrics
	journal   *telemetry.Journal
}

func newMonEnv(t *testing.T, addresses func(sentinels []*fakeNode) []string, options ...func(*MonitorOptions)) *monEnv {
	t.Helper()
	e := &monEnv{t: t, a: newFakeNode(t), b: newFakeNode(t), c: newFakeNode(t),
		metrics: telemetry.Discard(), journal: telemetry.NewJournal(100)}
	e.a.setRole("master", int64(10), []any{})
	for _, n := range []*fakeNode{e.b, e.c} {
		host, port, _ := net.SplitHostPort(e.a.addr)
		p, _ := net.LookupPort("tcp", port)
		n.setRole("slave", host, int64(p), "connected", int64(10))
	}
	var addrs []string
	for range 3 {
		s := newFakeNode(t)
		s.setMaster("m", e.a.addr)
		e.sentinels = append(e.sentinels, s)
		addrs = append(addrs, s.addr)
	}
	if addresses != nil {
		addrs = addresses(e.sentinels)
	}
	o := MonitorOptions{
		Addresses: addrs, QueryTimeout: 200 * time.Millisecond, ResyncInterval: 100 * time.Millisecond,
		PingInterval: 100 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		ConfirmWindow: 300 * time.Millisecond, SwitchHold: 5 * time.Second,
		Metrics: e.metrics, Journal: e.journal,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: testWriter{t}}),
	}
	for _, f := range options {
		f(&o)
	}
	var err error
	e.mon, err = NewMonitor(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.mon.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	e.waitTruth("the first truth", e.a.addr, SourceMajority)
	e.waitFor("every link up", func() error {
		for _, s := range e.sentinels {
			if s.subscribers("+switch-master") == 0 {
				return errors.New(s.addr + " has no subscriber")
			}
		}
		return nil
	})
	return e
}

func (e *monEnv) waitFor(what string, cond func() error) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *monEnv) waitTruth(what, addr, source string) Master {
	e.t.Helper()
	var m Master
	e.waitFor(what, func() error {
		m = e.mon.Masters()["m"]
		if m.Addr != addr || m.Source != source {
			return errors.New("truth is " + m.Addr + " (" + m.Source + ")")
		}
		return nil
	})
	return m
}

func (e *monEnv) failovers() float64 {
	var m dto.Metric
	if err := e.metrics.Failovers.WithLabelValues("m").Write(&m); err != nil {
		e.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func switchPayload(from, to string) string {
	return "m " + strings.Replace(from, ":", " ", 1) + " " + strings.Replace(to, ":", " ", 1)
}

// TestMonitorSwitchMasterFastPath: a +switch-master from one Sentinel that
// the new master confirms is the truth at once, before any majority, and
// the copies from the other Sentinels change nothing.
func TestMonitorSwitchMasterFastPath(t *testing.T) {
	e := newMonEnv(t, nil)
	notify, unsubscribe := e.mon.Subscribe()
	defer unsubscribe()
	e.b.setRole("master", int64(20), []any{})

	start := time.Now()
	if n := e.sentinels[0].publish("+switch-master", switchPayload(e.a.addr, e.b.addr)); n == 0 {
		t.Fatal("nobody subscribed")
	}
	select {
	case <-notify:
	case <-time.After(2 * time.Second):
		t.Fatal("no notification")
	}
	took := time.Since(start)
	m := e.mon.Masters()["m"]
	if m.Addr != e.b.addr || m.Source != SourceSwitchMaster || !m.Known() {
		t.Fatalf("truth after the switch: %+v", m)
	}
	t.Logf("+switch-master → subscribers notified in %s (includes the ROLE check of the new master)", took)
	if took > 100*time.Millisecond {
		t.Errorf("switch took %s to reach subscribers", took)
	}

	// The same switch from the other Sentinels, and polls that still show
	// the old master, change nothing.
	for _, s := range e.sentinels[1:] {
		s.publish("+switch-master", switchPayload(e.a.addr, e.b.addr))
	}
	// A negative check needs a window: three polls and the duplicates.
	time.Sleep(300 * time.Millisecond)
	if m := e.mon.Masters()["m"]; m.Addr != e.b.addr {
		t.Fatalf("truth went back to %s while the majority lags", m.Addr)
	}
	select {
	case <-notify:
		t.Fatal("duplicate events notified again")
	default:
	}

	// The majority catches up.
	for _, s := range e.sentinels {
		s.setMaster("m", e.b.addr)
	}
	e.waitTruth("the majority caught up", e.b.addr, SourceMajority)
	if got := e.failovers(); got != 1 {
		t.Fatalf("failovers counted %v times, want 1", got)
	}
	fs := e.journal.Failovers()
	if len(fs) != 1 || fs[0].From != e.a.addr || fs[0].To != e.b.addr || fs[0].At.Before(start) {
		t.Fatalf("journal failovers %+v", fs)
	}
}

// TestMonitorIgnoresUnconfirmedSwitch: a +switch-master naming a node that
// does not say it is a master is not applied.
func TestMonitorIgnoresUnconfirmedSwitch(t *testing.T) {
	e := newMonEnv(t, nil)
	e.sentinels[0].publish("+switch-master", switchPayload(e.a.addr, e.c.addr))
	e.waitFor("the switch reported unconfirmed", func() error {
		for _, ev := range e.journal.Events() {
			if ev.Type == "switch-unconfirmed" {
				return nil
			}
		}
		return errors.New("not yet")
	})
	if m := e.mon.Masters()["m"]; m.Addr != e.a.addr || m.Source != SourceMajority {
		t.Fatalf("truth after an unconfirmed switch: %+v", m)
	}
}

// TestMonitorStaleWithoutMajority: with two of three Sentinels gone the
// truth keeps the last address but is no longer known; back, it is fresh.
func TestMonitorStaleWithoutMajority(t *testing.T) {
	e := newMonEnv(t, nil)
	notify, unsubscribe := e.mon.Subscribe()
	defer unsubscribe()
	e.sentinels[1].setDown(true)
	e.waitFor("two of three agreeing", func() error {
		if m := e.mon.Masters()["m"]; !m.Known() || m.Agree != 2 || m.Total != 3 {
			return fmt.Errorf("one sentinel down: %+v", m)
		}
		return nil
	})
	e.sentinels[2].setDown(true)
	m := e.waitTruth("stale", e.a.addr, SourceStale)
	if m.Known() || m.Reporting != 1 {
		t.Fatalf("stale truth: %+v", m)
	}
	select {
	case <-notify:
	case <-time.After(time.Second):
		t.Fatal("no notification for staleness")
	}
	// The links go down through their own messages to the Run loop, which
	// may take a poll that saw the Sentinel gone first: wait for them.
	e.waitFor("one link up", func() error {
		up := 0
		for _, s := range e.mon.Status() {
			if s.LinkUp {
				up++
			}
		}
		if up != 1 {
			return fmt.Errorf("%d links up, want 1: %+v", up, e.mon.Status())
		}
		return nil
	})
	e.sentinels[1].setDown(false)
	e.sentinels[2].setDown(false)
	e.waitTruth("fresh again", e.a.addr, SourceMajority)
}

// TestMonitorResyncsAfterMissedSwitch: a failover that happened while every
// link was down is picked up from the Sentinels' views on reconnect.
func TestMonitorResyncsAfterMissedSwitch(t *testing.T) {
	e := newMonEnv(t, nil)
	for _, s := range e.sentinels {
		s.setDown(true)
	}
	e.waitTruth("stale", e.a.addr, SourceStale)
	e.b.setRole("master", int64(20), []any{})
	for _, s := range e.sentinels {
		s.setMaster("m", e.b.addr)
		s.setDown(false)
	}
	e.waitTruth("the missed switch", e.b.addr, SourceMajority)
	// The failover is counted just after the new truth is published: wait
	// for the count, then check it is one.
	e.waitFor("the failover counted", func() error {
		if got := e.failovers(); got < 1 {
			return fmt.Errorf("failovers = %v", got)
		}
		return nil
	})
	if got := e.failovers(); got != 1 {
		t.Fatalf("failovers = %v", got)
	}
}

// TestMonitorNoticesHungSentinel: a Sentinel that keeps its connections but
// answers nothing (SIGSTOP) is seen down by the ping, not waited for.
func TestMonitorNoticesHungSentinel(t *testing.T) {
	e := newMonEnv(t, nil)
	hung := e.sentinels[0]
	hung.setHang(true)
	e.waitFor("the hung link seen down", func() error {
		for _, s := range e.mon.Status() {
			if s.Addr == hung.addr && !s.LinkUp && !s.Reachable {
				return nil
			}
		}
		return errors.New("still up")
	})
	if m := e.mon.Masters()["m"]; !m.Known() {
		t.Fatalf("two of three answering, but truth %+v", m)
	}
	hung.setHang(false)
	e.waitFor("the link back", func() error {
		for _, s := range e.mon.Status() {
			if s.Addr == hung.addr && s.LinkUp && s.Reachable {
				return nil
			}
		}
		return errors.New("still down")
	})
}

// TestMonitorCountsASentinelOnce: one Sentinel listed under two addresses
// (say a hostname in the config and an IP from Consul) is one vote.
func TestMonitorCountsASentinelOnce(t *testing.T) {
	e := newMonEnv(t, func(s []*fakeNode) []string {
		_, port, _ := net.SplitHostPort(s[0].addr)
		return []string{s[0].addr, "localhost:" + port, s[1].addr, s[2].addr}
	})
	e.waitFor("three sentinels counted", func() error {
		if m := e.mon.Masters()["m"]; m.Total != 3 || m.Agree != 3 {
			return fmt.Errorf("counted %d sentinels, %d agree", m.Total, m.Agree)
		}
		return nil
	})
	// Two sentinels down: the remaining one, listed twice, is no majority.
	e.sentinels[1].setDown(true)
	e.sentinels[2].setDown(true)
	e.waitTruth("stale", e.a.addr, SourceStale)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logLines keeps a Monitor's log lines (and passes them to t.Log) for a test
// that checks what was logged: pass its logTo to newMonEnv.
type logLines struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	_, _ = testWriter{l.t}.Write(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	return len(p), nil
}

func (l *logLines) logTo(o *MonitorOptions) {
	o.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: l})
}

// containing returns the lines logged so far that contain s.
func (l *logLines) containing(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// TestMonitorCachesMasterNames checks that the resync (every 100ms here)
// asks SENTINEL MASTERS only when its names are old or a link came back,
// while get-master-addr-by-name still catches a missed switch each time.
func TestMonitorCachesMasterNames(t *testing.T) {
	e := newMonEnv(t, nil)
	s := e.sentinels[0]
	before := s.called("sentinel masters")
	// A switch nobody published, then ten resyncs.
	for _, sn := range e.sentinels {
		sn.setMaster("m", e.b.addr)
	}
	e.b.setRole("master", int64(20), []any{})
	e.waitTruth("the unpublished switch", e.b.addr, SourceMajority)
	polls := s.called("sentinel get-master-addr-by-name")
	e.waitFor("ten more resyncs", func() error {
		if n := s.called("sentinel get-master-addr-by-name") - polls; n < 10 {
			return fmt.Errorf("%d resyncs so far", n)
		}
		return nil
	})
	if n := s.called("sentinel masters") - before; n > 1 {
		t.Fatalf("SENTINEL MASTERS asked %d times in about ten resyncs, want at most once (names cached for %s)", n, namesMaxAge)
	}
	// The link drops and comes back: the names are read again.
	before = s.called("sentinel masters")
	s.setDown(true)
	s.setDown(false)
	e.waitFor("SENTINEL MASTERS after the link came back", func() error {
		if s.called("sentinel masters") == before {
			return errors.New("not asked yet")
		}
		return nil
	})
}

func TestNewMonitorChecksOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    MonitorOptions
		wantErr string
	}{
		{"no sentinels", MonitorOptions{Metrics: telemetry.Discard()}, "no sentinel addresses"},
		{"bad address", MonitorOptions{Addresses: []string{"10.0.0.1"}, Metrics: telemetry.Discard()}, `"10.0.0.1"`},
		{"no metrics", MonitorOptions{Addresses: []string{"10.0.0.1:26379"}}, "no metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMonitor(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewMonitor: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
