package discovery

import (
	"maps"
	"time"
)

// The failovers the Monitor follows, published for the agent beside the
// outgoing master: it pauses writes on its Redis while its master is being
// failed over (see Instance and pauseStep). The Run loop owns m.failovers;
// this file turns each change into a snapshot and wakes the subscribers.

// Outcomes of a followed failover, in FailoverView.Outcome.
const (
	FailoverRunning   = ""          // the leader is still working on it
	FailoverAborted   = "aborted"   // the leader published -failover-abort-*
	FailoverAnnounced = "announced" // a +switch-master named the new master
)

// FailoverView is the newest failover the Monitor followed for one master
// name, as its leader Sentinel published it.
type FailoverView struct {
	Epoch    uint64
	Old      string // the master being failed over, as Sentinel names it
	Selected string // the replica the leader selected; "" until +selected-slave
	Phase    string // the leader's last event, e.g. "+failover-state-wait-promotion"
	Started  time.Time
	// Timeout is the master's failover-timeout as the Sentinels report it:
	// past Started+Timeout a running failover that changed nothing is over.
	Timeout time.Duration
	// DownAfter is the least down-after-milliseconds a Sentinel reported
	// for the master (0: unknown). A paused master looks silent to the
	// Sentinels (see pauseStep), so a pause must stay well below it.
	DownAfter time.Duration
	Promoted  bool   // the selected replica answered ROLE master
	Outcome   string // FailoverRunning, FailoverAborted or FailoverAnnounced
	// Why is the abort event or the address the +switch-master named.
	Why string
}

// FailoverSource is what the runner of a local Redis needs to pause
// writes: the failovers the Monitor follows, and the same wake-ups as the
// truth (Subscribe) when one changes.
type FailoverSource interface {
	Failovers() map[string]FailoverView
}

// Failovers returns the newest failover followed for each master name,
// running or ended.
func (m *Monitor) Failovers() map[string]FailoverView {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return maps.Clone(m.foViews)
}

// publishFailover publishes name's followed failover fo, or, with fo nil,
// ends the published one with outcome and why. Subscribers are woken on
// every change, since a pause starts or ends with it.
func (m *Monitor) publishFailover(name string, fo *failover, outcome, why string) {
	m.mu.Lock()
	prev, had := m.foViews[name]
	var v FailoverView
	switch {
	case fo != nil:
		v = FailoverView{Epoch: fo.epoch, Old: fo.old, Selected: fo.selected, Phase: fo.phase,
			Started: fo.started, Timeout: m.failoverTimeout(name), DownAfter: m.downAfters[name], Promoted: fo.promoted}
	case had && prev.Outcome == FailoverRunning:
		v = prev
		v.Outcome, v.Why = outcome, why
	default:
		m.mu.Unlock()
		return
	}
	m.foViews[name] = v
	m.mu.Unlock()
	if !had || prev != v {
		m.notify()
	}
}
