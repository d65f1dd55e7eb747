package telemetry

import (
	"sync"
	"time"

	netaddr "github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// Kind is the part of the agent an Event comes from. It is a named type so
// that a caller picks one of the constants below rather than spelling a
// string; the status API shows it as its string value.
type Kind string

// Event kinds recorded in the journal.
const (
	KindSentinel  Kind = "sentinel"  // a Sentinel pub/sub message
	KindTruth     Kind = "truth"     // the Sentinel truth for a master changed
	KindConsul    Kind = "consul"    // a registration or check changed in Consul
	KindTwemproxy Kind = "twemproxy" // a pipeline run, restart, rollback
	KindAgent     Kind = "agent"     // start, reload, stop
	KindRedis     Kind = "redis"     // the agent acted on a local Redis (a write pause)
	KindHAProxy   Kind = "haproxy"   // a HAProxy server moved, a runtime API error
)

// Event levels, how loud an Event is; an empty Level is recorded as
// LevelInfo. They stay untyped strings while callers that compute a level
// into a string variable move over.
const (
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Target is a part of the system that applies a failover: the role tags in
// Consul, or a proxy pointed at the new master. Each has one slot in
// Failover, so a caller that names a target cannot misspell it.
type Target int

// Failover targets.
const (
	// TargetConsul is the new master tagged in Consul by the agent beside it.
	TargetConsul Target = iota + 1
	// TargetTwemproxy is a twemproxy config rewritten and restarted.
	TargetTwemproxy
	// TargetHAProxy is a HAProxy server moved through the runtime API.
	TargetHAProxy
)

// String is the target's name in logs and in the status API.
func (t Target) String() string {
	switch t {
	case TargetConsul:
		return "consul"
	case TargetTwemproxy:
		return "twemproxy"
	case TargetHAProxy:
		return "haproxy"
	}
	return "unknown"
}

// Event is one line of the journal. It is a domain type: the status API
// maps it to its own wire type.
type Event struct {
	Time    time.Time
	Kind    Kind
	Type    string // e.g. +switch-master, register, restart
	Subject string // master name, service ID or proxy name
	Detail  string // human text
	Level   string // LevelInfo, LevelWarn or LevelError
}

// Failover is one change of master for a master name, with the time each
// target applied it. Zero times mean not (yet) applied by this agent.
type Failover struct {
	Master      string
	From        string
	To          string
	At          time.Time // when the agent learnt of it
	ConsulAt    time.Time
	TwemproxyAt time.Time
	HAProxyAt   time.Time
}

// slot is where f keeps the time target applied it; nil for an unknown target.
func (f *Failover) slot(target Target) *time.Time {
	switch target {
	case TargetConsul:
		return &f.ConsulAt
	case TargetTwemproxy:
		return &f.TwemproxyAt
	case TargetHAProxy:
		return &f.HAProxyAt
	}
	return nil
}

// Journal keeps the most recent events and failovers in memory for the status
// API and the dashboard: the typed observer the runners report to. A nil
// *Journal records nothing. Safe for concurrent use.
type Journal struct {
	mu        sync.Mutex
	max       int
	events    []Event
	failovers []Failover
	seq       uint64
}

// NewJournal keeps at most max events and max failovers.
func NewJournal(max int) *Journal {
	if max <= 0 {
		max = 300
	}
	return &Journal{max: max}
}

// Add records an event; a zero Time is set to now, a zero Level to info.
func (j *Journal) Add(e Event) {
	if j == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Level == "" {
		e.Level = LevelInfo
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	j.events = append(j.events, e)
	if len(j.events) > j.max {
		j.events = append(j.events[:0:0], j.events[len(j.events)-j.max:]...)
	}
}

// Events returns a copy of the recorded events, oldest first.
func (j *Journal) Events() []Event {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Event(nil), j.events...)
}

// Seq is a counter that grows with every change, so pollers can skip work.
func (j *Journal) Seq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq
}

// Failover records the start of a failover.
func (j *Journal) Failover(master, from, to string, at time.Time) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	j.failovers = append(j.failovers, Failover{Master: master, From: from, To: to, At: at})
	if len(j.failovers) > j.max {
		j.failovers = append(j.failovers[:0:0], j.failovers[len(j.failovers)-j.max:]...)
	}
}

// AppliedBy marks the newest failover of master to addr as applied by
// target at t, and returns how long after the failover was learnt that was;
// ok is false when no such failover is open, when it was already marked for
// target, or when target is not one of the Target constants.
func (j *Journal) AppliedBy(target Target, master, addr string, t time.Time) (d time.Duration, ok bool) {
	if j == nil {
		return 0, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := len(j.failovers) - 1; i >= 0; i-- {
		f := &j.failovers[i]
		if f.Master != master {
			continue
		}
		// Targets spell an address as they read it (the HAProxy driver
		// normalises it), so compare addresses, not strings.
		if !netaddr.Same(f.To, addr) {
			return 0, false
		}
		slot := f.slot(target)
		if slot == nil || !slot.IsZero() {
			return 0, false
		}
		*slot = t
		j.seq++
		return t.Sub(f.At), true
	}
	return 0, false
}

// AppliedConsul marks the newest failover of master to addr as tagged in
// Consul at t (see AppliedBy).
func (j *Journal) AppliedConsul(master, addr string, t time.Time) (time.Duration, bool) {
	return j.AppliedBy(TargetConsul, master, addr, t)
}

// AppliedTwemproxy marks the newest failover of master to addr as applied
// by a twemproxy restart at t (see AppliedBy).
func (j *Journal) AppliedTwemproxy(master, addr string, t time.Time) (time.Duration, bool) {
	return j.AppliedBy(TargetTwemproxy, master, addr, t)
}

// Failovers returns a copy of the recorded failovers, oldest first.
func (j *Journal) Failovers() []Failover {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Failover(nil), j.failovers...)
}

// AppliedHAProxy marks the newest failover of master to addr as applied by
// a HAProxy server moved to it at t (see AppliedBy).
func (j *Journal) AppliedHAProxy(master, addr string, t time.Time) (time.Duration, bool) {
	return j.AppliedBy(TargetHAProxy, master, addr, t)
}
