package discovery

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func followPromotion(o *MonitorOptions) { o.FollowPromotion = true }

// hp is addr as Sentinel writes it in an event: "ip port".
func hp(addr string) string { return strings.Replace(addr, ":", " ", 1) }

// startFailover publishes, from s, the leader's events up to the selection
// of replica: a new epoch, the election, +selected-slave.
func (e *monEnv) startFailover(s *fakeNode, epoch, replica string) {
	e.t.Helper()
	s.publish("+new-epoch", epoch)
	s.publish("+try-failover", "master m "+hp(e.a.addr))
	s.publish("+elected-leader", "master m "+hp(e.a.addr))
	s.publish("+selected-slave", "slave "+replica+" "+hp(replica)+" @ m "+hp(e.a.addr))
}

// TestMonitorFollowsPromotion: with FollowPromotion, the replica the leader
// selected is the truth as soon as it answers ROLE master, while every
// Sentinel still names the old master; the majority then takes over.
func TestMonitorFollowsPromotion(t *testing.T) {
	e := newMonEnv(t, nil, followPromotion)
	e.startFailover(e.sentinels[0], "7", e.b.addr)
	// The replica is not promoted yet: nothing moves.
	time.Sleep(150 * time.Millisecond) // a negative check needs a window: several ROLE attempts
	if m := e.mon.Masters()["m"]; m.Addr != e.a.addr {
		t.Fatalf("truth moved to %s before the replica answered master", m.Addr)
	}
	e.b.setRole("master", int64(20), []any{})
	e.waitTruth("the promotion applied", e.b.addr, SourcePromotion)
	for _, s := range e.sentinels {
		s.setMaster("m", e.b.addr)
	}
	e.waitTruth("the majority caught up", e.b.addr, SourceMajority)
	if got := e.failovers(); got != 1 {
		t.Fatalf("failovers counted %v times, want 1", got)
	}
}

// TestMonitorPromotionUndone: an abort, or a +switch-master naming another
// node, undoes a promotion at once.
func TestMonitorPromotionUndone(t *testing.T) {
	t.Run("abort", func(t *testing.T) {
		e := newMonEnv(t, nil, followPromotion)
		e.b.setRole("master", int64(20), []any{})
		e.startFailover(e.sentinels[0], "7", e.b.addr)
		e.waitTruth("the promotion applied", e.b.addr, SourcePromotion)
		e.sentinels[0].publish("-failover-abort-no-good-slave", "master m "+hp(e.a.addr))
		e.waitTruth("the old master back", e.a.addr, SourceMajority)
		e.waitFor("promotion-undone journalled", func() error {
			for _, ev := range e.journal.Events() {
				if ev.Type == "promotion-undone" {
					return nil
				}
			}
			return errors.New("not yet")
		})
	})
	t.Run("switch elsewhere", func(t *testing.T) {
		e := newMonEnv(t, nil, followPromotion)
		e.b.setRole("master", int64(20), []any{})
		e.startFailover(e.sentinels[0], "7", e.b.addr)
		e.waitTruth("the promotion applied", e.b.addr, SourcePromotion)
		e.c.setRole("master", int64(30), []any{})
		e.sentinels[1].publish("+switch-master", switchPayload(e.a.addr, e.c.addr))
		e.waitTruth("the switch to c", e.c.addr, SourceSwitchMaster)
	})
	t.Run("a late switch back to the old master", func(t *testing.T) {
		// The old master came back a master, and a leader of an older
		// failover announces it late: not this failover's outcome.
		e := newMonEnv(t, nil, followPromotion)
		e.b.setRole("master", int64(20), []any{})
		e.startFailover(e.sentinels[0], "7", e.b.addr)
		e.waitTruth("the promotion applied", e.b.addr, SourcePromotion)
		e.sentinels[2].publish("+switch-master", switchPayload(e.b.addr, e.a.addr))
		e.waitFor("the stale switch journalled", func() error {
			for _, ev := range e.journal.Events() {
				if ev.Type == "switch-stale" {
					return nil
				}
			}
			return errors.New("not yet")
		})
		time.Sleep(150 * time.Millisecond) // a negative check needs a window: a confirmation and a poll
		if m := e.mon.Masters()["m"]; m.Addr != e.b.addr || m.Source != SourcePromotion {
			t.Fatalf("truth after a late switch back to the old master: %+v", m)
		}
	})
	t.Run("not the leader", func(t *testing.T) {
		e := newMonEnv(t, nil, followPromotion)
		e.b.setRole("master", int64(20), []any{})
		e.startFailover(e.sentinels[0], "7", e.b.addr)
		e.waitTruth("the promotion applied", e.b.addr, SourcePromotion)
		// Another Sentinel's abort of its own (lost) attempt changes nothing.
		e.sentinels[1].publish("-failover-abort-not-elected", "master m "+hp(e.a.addr))
		time.Sleep(150 * time.Millisecond) // a negative check needs a window: one poll
		if m := e.mon.Masters()["m"]; m.Addr != e.b.addr || m.Source != SourcePromotion {
			t.Fatalf("truth after another Sentinel's abort: %+v", m)
		}
	})
}

// TestMonitorPromotionTimesOut: the leader promoted a replica and went
// silent; every Sentinel still names the old master. At the failover
// timeout the Monitor asks the Sentinels at once and drops the promotion,
// rather than at its next resync (5 s here), so that every agent drops it
// at the same moment.
func TestMonitorPromotionTimesOut(t *testing.T) {
	const timeout = 400 * time.Millisecond
	e := newMonEnv(t, func(ss []*fakeNode) []string {
		var addrs []string
		for _, s := range ss {
			s.setFailoverTimeout(int(timeout.Milliseconds()))
			addrs = append(addrs, s.addr)
		}
		return addrs
	}, followPromotion, func(o *MonitorOptions) { o.ResyncInterval = 5 * time.Second })
	e.waitFor("the failover timeout known", func() error {
		for _, s := range e.sentinels {
			s.mu.Lock()
			n := s.calls["sentinel masters"]
			s.mu.Unlock()
			if n == 0 {
				return errors.New("SENTINEL MASTERS not asked yet")
			}
		}
		return nil
	})
	e.b.setRole("master", int64(20), []any{})
	start := time.Now()
	e.startFailover(e.sentinels[0], "7", e.b.addr)
	e.waitTruth("the promotion applied", e.b.addr, SourcePromotion)
	e.waitTruth("the old master back at the timeout", e.a.addr, SourceMajority)
	if took := time.Since(start); took < timeout || took > timeout+time.Second {
		t.Fatalf("promotion dropped %s after the election, want at the %s failover timeout", took, timeout)
	} else {
		t.Logf("promotion dropped %s after the election (failover timeout %s)", took.Round(time.Millisecond), timeout)
	}
}

// TestMonitorPromotionOff: without FollowPromotion the Monitor waits for the
// announcement, as before.
func TestMonitorPromotionOff(t *testing.T) {
	e := newMonEnv(t, nil)
	e.b.setRole("master", int64(20), []any{})
	e.startFailover(e.sentinels[0], "7", e.b.addr)
	time.Sleep(200 * time.Millisecond) // a negative check needs a window: two polls
	if m := e.mon.Masters()["m"]; m.Addr != e.a.addr || m.Source != SourceMajority {
		t.Fatalf("truth moved without FollowPromotion: %+v", m)
	}
}

// TestMonitorPublishesFailovers: Failovers shows the failover the leader
// runs (old master, selected replica, phase) and how it ended, which is
// what the write pause of the old master's agent follows.
func TestMonitorPublishesFailovers(t *testing.T) {
	for _, end := range []struct{ name, outcome string }{{"abort", FailoverAborted}, {"switch", FailoverAnnounced}} {
		t.Run(end.name, func(t *testing.T) {
			e := newMonEnv(t, nil)
			e.startFailover(e.sentinels[0], "7", e.b.addr)
			e.waitFor("the running failover published", func() error {
				fo, ok := e.mon.Failovers()["m"]
				if !ok || fo.Epoch != 7 || fo.Old != e.a.addr || fo.Selected != e.b.addr || fo.Outcome != FailoverRunning {
					return errors.New("not yet")
				}
				return nil
			})
			if end.outcome == FailoverAborted {
				e.sentinels[0].publish("-failover-abort-slave-timeout", "master m "+hp(e.a.addr))
			} else {
				e.b.setRole("master", int64(20), []any{})
				e.sentinels[1].publish("+switch-master", switchPayload(e.a.addr, e.b.addr))
			}
			e.waitFor("the end published", func() error {
				if fo := e.mon.Failovers()["m"]; fo.Outcome != end.outcome || fo.Epoch != 7 {
					return errors.New("not yet")
				}
				return nil
			})
		})
	}
}

// TestMonitorIgnoresSwitchOlderThanTheConfig: a Sentinel announces a
// +switch-master while it holds an older configuration epoch than others
// that name another master (the leader of an older failover that finished
// by timeout, to a node that came back a master). The Monitor did not follow
// the newer failover (it started after it), so only the epochs tell. The
// same switch from a Sentinel at the newest epoch is a failover, and
// applied.
func TestMonitorIgnoresSwitchOlderThanTheConfig(t *testing.T) {
	t.Run("older epoch", func(t *testing.T) {
		e := newMonEnv(t, nil)
		for _, s := range e.sentinels[:2] {
			s.setEpoch("m", 6)
		}
		e.sentinels[2].setEpoch("m", 5)
		e.b.setRole("master", int64(20), []any{}) // the old master, back a master
		e.sentinels[2].publish("+switch-master", switchPayload(e.a.addr, e.b.addr))
		e.waitSwitchStale("epoch 6", e.a.addr)
	})
	t.Run("announced as its failover timed out", func(t *testing.T) {
		// The leader of the older failover took the newer epoch without
		// its address: the epochs are equal, the timeout tells.
		e := newMonEnv(t, nil)
		e.b.setRole("master", int64(20), []any{})
		e.sentinels[2].publish("+failover-end-for-timeout", "master m "+hp(e.a.addr))
		e.sentinels[2].publish("+switch-master", switchPayload(e.a.addr, e.b.addr))
		e.waitSwitchStale("ended by timeout", e.a.addr)
	})
	t.Run("newest epoch", func(t *testing.T) {
		e := newMonEnv(t, nil)
		for _, s := range e.sentinels[:2] {
			s.setEpoch("m", 6)
		}
		e.sentinels[2].setEpoch("m", 7)
		e.b.setRole("master", int64(20), []any{})
		e.sentinels[2].publish("+switch-master", switchPayload(e.a.addr, e.b.addr))
		e.waitTruth("the switch applied", e.b.addr, SourceSwitchMaster)
	})
}

// TestMonitorWarnsOnceWithoutSentinelMaster: Sentinels whose ACL user may
// not run SENTINEL MASTER (no +sentinel|master) answer it NOPERM. The
// Monitor warns once, however many switches it handles, and still applies
// them: with the announcer's configuration unknown, the config-epoch check
// is off.
func TestMonitorWarnsOnceWithoutSentinelMaster(t *testing.T) {
	logs := &logLines{t: t}
	e := newMonEnv(t, nil, logs.logTo)
	for _, s := range e.sentinels {
		s.denyMaster()
	}
	e.b.setRole("master", int64(20), []any{})
	e.sentinels[0].publish("+switch-master", switchPayload(e.a.addr, e.b.addr))
	e.waitTruth("the first switch applied", e.b.addr, SourceSwitchMaster)
	// The configurations are asked before the confirmation is applied, so
	// every refusal of this switch is logged by now. The Sentinels catch up
	// (a second switch while the majority still named a would count as the
	// majority moving on), then another failover, b → c.
	for _, s := range e.sentinels {
		s.setMaster("m", e.b.addr)
	}
	e.waitTruth("the majority caught up", e.b.addr, SourceMajority)
	e.c.setRole("master", int64(30), []any{})
	e.sentinels[1].publish("+switch-master", switchPayload(e.b.addr, e.c.addr))
	e.waitTruth("the second switch applied", e.c.addr, SourceSwitchMaster)
	got := logs.containing("+sentinel|master")
	if len(got) != 1 {
		t.Fatalf("%d log lines mention +sentinel|master, want 1:\n%s", len(got), strings.Join(got, "\n"))
	}
	if !strings.Contains(got[0], "[WARN]") || !strings.Contains(got[0], "NOPERM") {
		t.Errorf("the warning: %s", got[0])
	}
}

// waitSwitchStale waits for a switch-stale journal event whose detail holds
// why, then checks that the truth is still the majority's keep, one poll
// later.
func (e *monEnv) waitSwitchStale(why, keep string) {
	e.t.Helper()
	e.waitFor("the stale switch journalled ("+why+")", func() error {
		for _, ev := range e.journal.Events() {
			if ev.Type == "switch-stale" && strings.Contains(ev.Detail, why) {
				return nil
			}
		}
		return errors.New("not yet")
	})
	time.Sleep(150 * time.Millisecond) // a negative check needs a window: one poll
	if m := e.mon.Masters()["m"]; m.Addr != keep || m.Source != SourceMajority {
		e.t.Fatalf("truth after a stale switch (%s): %+v, want %s from the majority", why, m, keep)
	}
}

func TestSupersededBy(t *testing.T) {
	views := map[string]masterInfo{
		"127.0.0.1:1": {Addr: "10.0.0.1:6379", ConfigEpoch: 6},
		"127.0.0.1:2": {Addr: "10.0.0.1:6379", ConfigEpoch: 6},
		"127.0.0.1:3": {Addr: "10.0.0.2:6379", ConfigEpoch: 5},
	}
	for _, c := range []struct {
		what, from, to string
		stale          bool
	}{
		{"announcer older, others name another master", "127.0.0.1:3", "10.0.0.2:6379", true},
		{"announcer at the newest epoch", "127.0.0.1:1", "10.0.0.3:6379", false},
		{"the newer config names the same node", "127.0.0.1:3", "10.0.0.1:6379", false},
		{"announcer's config unknown", "127.0.0.1:9", "10.0.0.2:6379", false},
	} {
		if got := supersededBy(views, c.from, c.to); (got != "") != c.stale {
			t.Errorf("%s: supersededBy = %q, want stale %v", c.what, got, c.stale)
		}
	}
	if got := supersededBy(nil, "127.0.0.1:3", "10.0.0.2:6379"); got != "" {
		t.Errorf("no views: %q", got)
	}
}
