package discovery

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Voting: the Sentinels' last views counted per master name (one vote per
// Sentinel ID), fed to the truth rule, and the result published.

// votes returns one report per reachable Sentinel for name (its address,
// or "" if it does not monitor name) and the number of known Sentinels.
// Sentinels are told apart by their ID (SENTINEL MYID) once they answered,
// so one Sentinel known under two addresses (a hostname in the config, an
// IP in Consul) counts once; one never reached counts by its address.
func (m *Monitor) votes(name string) (reports []string, total int) {
	keys := make([]string, 0, len(m.sentinels))
	for k := range m.sentinels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		s := m.sentinels[k]
		id := "addr:" + k
		if s.status.ID != "" {
			id = "id:" + s.status.ID
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		total++
		if s.status.Reachable {
			reports = append(reports, s.status.View[name])
		}
	}
	return reports, total
}

// recount recomputes the truth of name from the Sentinels' last views at
// the time of a poll. A name that a majority of reachable Sentinels no
// longer lists was removed (SENTINEL REMOVE): it is forgotten.
func (m *Monitor) recount(name string, at time.Time) {
	reports, total := m.votes(name)
	if slices.IndexFunc(reports, func(r string) bool { return r != "" }) < 0 && 2*len(reports) > total {
		if _, ok := m.masters[name]; ok {
			m.log.Info("master no longer monitored by any sentinel", "master_name", name)
		}
		delete(m.truth, name)
		m.publish(name, Master{}, false, at)
		return
	}
	mst, ok := m.truthOf(name).eval(name, reports, total, at, m.opts.SwitchHold)
	m.publish(name, mst, ok, at)
}

// reevaluate recomputes the truth of name after a confirmed event and
// publishes it as of at (the event's arrival).
func (m *Monitor) reevaluate(name string, at time.Time) {
	reports, total := m.votes(name)
	mst, ok := m.truthOf(name).eval(name, reports, total, time.Now(), m.opts.SwitchHold)
	m.publish(name, mst, ok, at)
}

// truthOf returns the truth rule's state for name, creating it.
func (m *Monitor) truthOf(name string) *truthState {
	ts := m.truth[name]
	if ts == nil {
		ts = &truthState{}
		m.truth[name] = ts
	}
	return ts
}

// publish makes mst the truth for name; on a change of address or of
// staleness it records it and notifies subscribers.
func (m *Monitor) publish(name string, mst Master, ok bool, at time.Time) {
	m.mu.Lock()
	prev, had := m.masters[name]
	if ok {
		m.masters[name] = mst
	} else {
		delete(m.masters, name)
	}
	m.mu.Unlock()
	if !ok {
		if had {
			m.notify()
		}
		return
	}
	switch {
	case !had || !addr.Same(prev.Addr, mst.Addr):
		if had {
			m.opts.Metrics.Failovers.WithLabelValues(name).Inc()
			m.opts.Journal.Failover(name, prev.Addr, mst.Addr, mst.Since)
			m.log.Info("master changed", "master_name", name, "from", prev.Addr, "to", mst.Addr, "source", mst.Source)
		} else {
			m.log.Info("master learnt", "master_name", name, "addr", mst.Addr, "source", mst.Source)
		}
		m.opts.Journal.Add(telemetry.Event{
			Time: at, Kind: telemetry.KindTruth, Type: "master", Subject: name,
			Detail: fmt.Sprintf("%s → %s (%s, %d/%d sentinels agree)", orDash(prev.Addr), mst.Addr, mst.Source, mst.Agree, mst.Total),
		})
	case prev.Known() && !mst.Known():
		m.log.Warn("sentinel truth is stale: no majority and no fresh event", "master_name", name,
			"last_addr", mst.Addr, "reporting", mst.Reporting, "total", mst.Total)
		m.opts.Journal.Add(telemetry.Event{
			Time: at, Kind: telemetry.KindTruth, Type: "stale", Subject: name, Level: "warn",
			Detail: fmt.Sprintf("no sentinel majority (%d/%d reporting); keeping %s", mst.Reporting, mst.Total, mst.Addr),
		})
	case !prev.Known() && mst.Known():
		m.log.Info("sentinel truth is fresh again", "master_name", name, "addr", mst.Addr, "source", mst.Source)
		m.opts.Journal.Add(telemetry.Event{
			Time: at, Kind: telemetry.KindTruth, Type: "fresh", Subject: name,
			Detail: fmt.Sprintf("%s (%s, %d/%d sentinels agree)", mst.Addr, mst.Source, mst.Agree, mst.Total),
		})
	default:
		return
	}
	m.notify()
}
