package telemetry

import (
	"sync"
	"time"
)

// Event kinds recorded in the journal.
const (
	KindSentinel  = "sentinel"  // a Sentinel pub/sub message
	KindTruth     = "truth"     // the Sentinel truth for a master changed
	KindConsul    = "consul"    // a registration or check changed in Consul
	KindTwemproxy = "twemproxy" // a pipeline run, restart, rollback
	KindAgent     = "agent"     // start, reload, stop
)

// Event is one line of the journal.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Type    string    `json:"type"`             // e.g. +switch-master, register, restart
	Subject string    `json:"subject"`          // master name, service ID or proxy name
	Detail  string    `json:"detail,omitempty"` // human text
	Level   string    `json:"level,omitempty"`  // info, warn, error
}

// Failover is one change of master for a master name, with the time each
// target applied it. Zero times mean not (yet) applied by this agent.
type Failover struct {
	Master      string    `json:"master"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	At          time.Time `json:"at"` // when the agent learnt of it
	ConsulAt    time.Time `json:"consul_at,omitzero"`
	TwemproxyAt time.Time `json:"twemproxy_at,omitzero"`
}

// Journal keeps the most recent events and failovers in memory for the status
// API and the dashboard. Safe for concurrent use.
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

// Add records an event; a zero Time is set to now.
func (j *Journal) Add(e Event) {
	if j == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Level == "" {
		e.Level = "info"
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

// Applied marks the newest failover of master to addr as applied by target
// ("consul" or "twemproxy") at t, and returns how long after the failover
// was learnt that was; ok is false when no such failover is open.
func (j *Journal) Applied(target, master, addr string, t time.Time) (d time.Duration, ok bool) {
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
		if f.To != addr {
			return 0, false
		}
		var slot *time.Time
		switch target {
		case "consul":
			slot = &f.ConsulAt
		case "twemproxy":
			slot = &f.TwemproxyAt
		default:
			return 0, false
		}
		if !slot.IsZero() {
			return 0, false
		}
		*slot = t
		j.seq++
		return t.Sub(f.At), true
	}
	return 0, false
}

// Failovers returns a copy of the recorded failovers, oldest first.
func (j *Journal) Failovers() []Failover {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Failover(nil), j.failovers...)
}
