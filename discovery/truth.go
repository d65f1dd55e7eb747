package discovery

import (
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// Sources of the Sentinel truth, reported in Master.Source.
const (
	SourceMajority     = "majority"      // a strict majority of the known Sentinels agree
	SourceSwitchMaster = "switch-master" // a confirmed +switch-master the majority has not caught up with yet
	SourceStale        = "stale"         // no majority and no fresh event: the last known address
)

// Master is the Sentinel truth for one master name: the address the agent
// acts on, and why it believes it (the rule is truthState.eval's).
type Master struct {
	Name string
	// Addr is host:port as the Sentinels name it.
	Addr string
	// Source says why Addr is believed: SourceMajority, SourceSwitchMaster
	// or SourceStale. Only a stale truth may be wrong; consumers treat it as
	// unknown (see Known).
	Source string
	// Since is when the agent learnt Addr: the arrival of the +switch-master
	// or the poll that first showed the majority.
	Since time.Time
	// Agree is how many Sentinels report Addr, Reporting how many reachable
	// Sentinels report an address for this name, Total how many Sentinels
	// the agent knows.
	Agree     int
	Reporting int
	Total     int
}

// SourcePromotion is a truth that follows a failover in progress: the
// replica the leader Sentinel selected answered ROLE master before any
// Sentinel announced the switch (MonitorOptions.FollowPromotion).
const SourcePromotion = "promotion"

// Known reports whether m can be acted on: it is backed by a majority or a
// confirmed +switch-master, not merely the last address seen.
func (m Master) Known() bool { return m.Addr != "" && m.Source != SourceStale }

// truthState is the truth rule for one master name. It is pure state: the
// Monitor feeds it the Sentinels' reports and confirmed switches, and the
// unit tests do the same without any network.
type truthState struct {
	cur Master // Addr empty: never learnt

	// A confirmed +switch-master the majority has not caught up with.
	override     string
	overrideFrom string // the old address the event named
	overridePrev string // the truth when the event arrived
	overrideAt   time.Time

	// A confirmed promotion (see promoteTo) no Sentinel has announced yet.
	promoted     string
	promotedFrom string    // the master being failed over
	promotedAt   time.Time // when the replica answered ROLE master
	promotedBy   time.Time // the failover timeout: past it, a majority on promotedFrom undoes it
}

// promoteTo records that the replica a leader Sentinel selected answered
// ROLE master during the failover of old. It counts at once (the leader has
// a quorum's mandate for this epoch and the node took the role) until the
// majority agrees, names a third address, still names old past deadline,
// the Monitor undoes it (an abort, a switch to another node), or hold
// passes. It replaces an older confirmed switch.
func (s *truthState) promoteTo(old, addr string, at, deadline time.Time) {
	s.promoted, s.promotedFrom, s.promotedAt, s.promotedBy = addr, old, at, deadline
	s.override = ""
}

// unpromote drops a promotion (the failover aborted or went elsewhere).
func (s *truthState) unpromote() { s.promoted = "" }

// switchTo records a +switch-master whose new master confirmed its role.
// It counts at once (only a quorum-elected leader, or a Sentinel that took
// the leader's newer config, publishes one) until the majority agrees, a
// majority names a third address, or hold passes.
func (s *truthState) switchTo(old, addr string, at time.Time) {
	s.override, s.overrideFrom, s.overridePrev, s.overrideAt = addr, old, s.cur.Addr, at
	s.promoted = "" // the announcement supersedes the promotion it follows
}

// eval recomputes the truth from reports (the address each reachable
// Sentinel gives for this name, one entry per Sentinel) out of total known
// Sentinels, and returns it; ok is false while nothing was ever learnt.
//
// The rule: the address a strict majority of the known (not merely the
// reachable) Sentinels report; a pending confirmed switch wins over a
// majority that still names the old master; with neither, the last address
// is kept and flagged stale.
func (s *truthState) eval(name string, reports []string, total int, now time.Time, hold time.Duration) (Master, bool) {
	counts := make(map[string]int, len(reports))
	raw := make(map[string]string, len(reports))
	best, agree, reporting := "", 0, 0
	for _, r := range reports {
		if r == "" {
			continue
		}
		reporting++
		k := addr.Normalize(r)
		counts[k]++
		if _, ok := raw[k]; !ok {
			raw[k] = r
		}
		if counts[k] > agree {
			best, agree = k, counts[k]
		}
	}
	majority := ""
	if total > 0 && 2*agree > total {
		majority = raw[best]
	}
	set := func(a, source string, at time.Time) {
		if !addr.Same(s.cur.Addr, a) {
			s.cur.Addr, s.cur.Since = a, at
		}
		s.cur.Source = source
	}
	if s.promoted != "" {
		switch {
		case majority != "" && addr.Same(majority, s.promoted):
			s.promoted = "" // caught up
		case majority != "" && !addr.Same(majority, s.promotedFrom):
			s.promoted = "" // the majority names a third node
		case majority != "" && now.After(s.promotedBy):
			s.promoted = "" // the failover timed out and the old master stands
		case now.Sub(s.promotedAt) > hold:
			s.promoted = "" // never announced
		default:
			set(s.promoted, SourcePromotion, s.promotedAt)
		}
	}
	if s.promoted == "" && s.override != "" {
		switch {
		case majority != "" && addr.Same(majority, s.override):
			s.override = "" // caught up
		case majority != "" && !addr.Same(majority, s.overrideFrom) && !addr.Same(majority, s.overridePrev):
			s.override = "" // the majority moved on to a newer failover
		case now.Sub(s.overrideAt) > hold:
			s.override = "" // never confirmed by a majority
		default:
			set(s.override, SourceSwitchMaster, s.overrideAt)
		}
	}
	if s.promoted == "" && s.override == "" {
		switch {
		case majority != "":
			set(majority, SourceMajority, now)
		case s.cur.Addr != "":
			s.cur.Source = SourceStale
		default:
			return Master{}, false
		}
	}
	s.cur.Name = name
	s.cur.Agree = counts[addr.Normalize(s.cur.Addr)]
	s.cur.Reporting = reporting
	s.cur.Total = total
	return s.cur, true
}
