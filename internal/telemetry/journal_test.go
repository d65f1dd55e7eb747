package telemetry

import (
	"testing"
	"time"
)

func TestJournalAppliedByTarget(t *testing.T) {
	j := NewJournal(10)
	at := time.Unix(1000, 0)
	j.Failover("s1", "10.0.0.1:6379", "10.0.0.2:6379", at)

	if d, ok := j.AppliedConsul("s1", "10.0.0.2:6379", at.Add(3*time.Millisecond)); !ok || d != 3*time.Millisecond {
		t.Errorf("AppliedConsul = %v, %v; want 3ms, true", d, ok)
	}
	if _, ok := j.AppliedConsul("s1", "10.0.0.2:6379", at.Add(time.Second)); ok {
		t.Error("a second AppliedConsul for the same failover must not overwrite the first")
	}
	if _, ok := j.AppliedTwemproxy("s1", "10.0.0.9:6379", at); ok {
		t.Error("applied to another address than the failover's must not count")
	}
	if _, ok := j.AppliedBy(Target(99), "s1", "10.0.0.2:6379", at); ok {
		t.Error("an unknown Target must not count")
	}
	if d, ok := j.AppliedTwemproxy("s1", "10.0.0.2:6379", at.Add(9*time.Millisecond)); !ok || d != 9*time.Millisecond {
		t.Errorf("AppliedTwemproxy = %v, %v", d, ok)
	}
	f := j.Failovers()[0]
	if f.ConsulAt != at.Add(3*time.Millisecond) || f.TwemproxyAt != at.Add(9*time.Millisecond) {
		t.Errorf("failover = %+v", f)
	}
	if TargetConsul.String() != "consul" || TargetTwemproxy.String() != "twemproxy" {
		t.Errorf("target names = %s, %s", TargetConsul, TargetTwemproxy)
	}
}

func TestJournalBounded(t *testing.T) {
	j := NewJournal(3)
	for i := range 5 {
		j.Add(Event{Kind: KindAgent, Type: "e", Subject: string(rune('a' + i))})
		j.Failover("s", "a", "b", time.Unix(int64(i), 0))
	}
	if ev := j.Events(); len(ev) != 3 || ev[0].Subject != "c" || ev[0].Level != LevelInfo {
		t.Errorf("events = %+v, want the newest 3 at level info", ev)
	}
	if fs := j.Failovers(); len(fs) != 3 || fs[0].At != time.Unix(2, 0) {
		t.Errorf("failovers = %+v, want the newest 3", fs)
	}
	var nilJ *Journal
	nilJ.Add(Event{})
	if _, ok := nilJ.AppliedConsul("s", "b", time.Now()); ok {
		t.Error("a nil journal records nothing")
	}
}

// TestAppliedHAProxy: the HAProxy target has its own slot,
// marked once.
func TestAppliedHAProxy(t *testing.T) {
	j := NewJournal(10)
	t0 := time.Unix(1000, 0)
	j.Failover("s1", "10.0.0.1:6379", "10.0.0.2:6379", t0)
	if d, ok := j.AppliedHAProxy("s1", "10.0.0.2:6379", t0.Add(3*time.Millisecond)); !ok || d != 3*time.Millisecond {
		t.Fatalf("AppliedHAProxy = %s, %v", d, ok)
	}
	if _, ok := j.AppliedHAProxy("s1", "10.0.0.2:6379", t0.Add(time.Second)); ok {
		t.Error("a second HAProxy move marked the failover again")
	}
	f := j.Failovers()[0]
	if !f.HAProxyAt.Equal(t0.Add(3*time.Millisecond)) || !f.TwemproxyAt.IsZero() || TargetHAProxy.String() != "haproxy" {
		t.Errorf("failover = %+v", f)
	}
}
