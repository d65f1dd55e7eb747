package agent

import (
	"sort"
	"strings"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// nodeReport is what one agent (this one or a peer) knows of recent
// failovers: its journal's failovers and events, as /v1/status serves them.
type nodeReport struct {
	Node      string
	Failovers []status.Failover
	Events    []status.Event
}

// Bounds of the merged timeline.
const (
	// storyWindow is how far apart two agents may learn of one failover:
	// they all follow the same Sentinels, so milliseconds in practice.
	storyWindow = 30 * time.Second
	// eventsBefore and eventsAfter bound which journal events belong to a
	// failover: Sentinel's down and election come before an agent learns
	// of the switch, tags and restarts follow it.
	eventsBefore = 15 * time.Second
	eventsAfter  = 15 * time.Second
	// actionSlack lets an action a little older than the first Sentinel
	// phase in (clocks of agents on different hosts differ a little).
	actionSlack = 500 * time.Millisecond
	// maxStories and maxActions bound what one /v1/cluster carries.
	maxStories = 20
	maxActions = 60
)

// sentinelPhases names the Sentinel events that tell a failover's story.
var sentinelPhases = map[string]string{
	"+odown":           "down",
	"+try-failover":    "failover started",
	"+elected-leader":  "leader elected",
	"+selected-slave":  "replica chosen",
	"+promoted-slave":  "promoted",
	"+switch-master":   "announced",
	"+failover-end":    "ended",
	"-failover-abort-": "aborted",
}

// mergeStories tells each failover once: the failovers every agent
// journaled for one master name and one new address, learnt within
// storyWindow of each other, are one story, with Sentinel's phases (the
// earliest report of each), each agent's actions (the times it applied the
// failover and its Consul and twemproxy events around it) and the gap
// clients saw. It is pure; the newest maxStories stories are kept, oldest
// first.
func mergeStories(reports []nodeReport) []status.ClusterFailover {
	type entry struct {
		node string
		f    status.Failover
	}
	var all []entry
	for _, r := range reports {
		for _, f := range r.Failovers {
			all = append(all, entry{r.Node, f})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].f.At.Before(all[j].f.At) })

	var stories []status.ClusterFailover
	members := [][]entry{}
	for _, e := range all {
		joined := false
		for i := len(stories) - 1; i >= 0; i-- {
			s := &stories[i]
			if s.Master != e.f.Master || s.To != e.f.To || e.f.At.Sub(s.At) > storyWindow || hasNode(s.Nodes, e.node) {
				continue
			}
			s.Nodes = append(s.Nodes, e.node)
			if s.From == "" {
				s.From = e.f.From
			}
			members[i] = append(members[i], e)
			joined = true
			break
		}
		if !joined {
			stories = append(stories, status.ClusterFailover{Master: e.f.Master, From: e.f.From, To: e.f.To, At: e.f.At, Nodes: []string{e.node}})
			members = append(members, []entry{e})
		}
	}
	if n := len(stories) - maxStories; n > 0 {
		stories, members = stories[n:], members[n:]
	}

	for i := range stories {
		s := &stories[i]
		for _, m := range members[i] {
			if t := m.f.ConsulAt; !t.IsZero() {
				s.Actions = append(s.Actions, status.Action{Node: m.node, At: t, What: "tagged " + s.To + " master in Consul"})
				if s.ConsulAt.IsZero() || t.Before(s.ConsulAt) {
					s.ConsulAt = t
				}
			}
			if t := m.f.TwemproxyAt; !t.IsZero() {
				s.Actions = append(s.Actions, status.Action{Node: m.node, At: t, What: "moved twemproxy to " + s.To})
				if t.After(s.TwemproxyAt) {
					s.TwemproxyAt = t
				}
			}
			if t := m.f.HAProxyAt; !t.IsZero() {
				s.Actions = append(s.Actions, status.Action{Node: m.node, At: t, What: "HAProxy moved to " + s.To})
				if t.After(s.HAProxyAt) {
					s.HAProxyAt = t
				}
			}
		}
		addEvents(s, reports)
		sort.SliceStable(s.Phases, func(a, b int) bool { return s.Phases[a].At.Before(s.Phases[b].At) })
		sort.SliceStable(s.Actions, func(a, b int) bool { return s.Actions[a].At.Before(s.Actions[b].At) })
		if len(s.Actions) > maxActions {
			s.Actions = s.Actions[:maxActions]
		}
		s.Gap = gap(*s)
	}
	return stories
}

// addEvents takes into s the events every agent journaled around it: the
// Sentinel phases of its master name, then the agents' actions from the
// first phase on (a tag written, a service deregistered, a handoff, a
// twemproxy rewrite or restart, a HAProxy server moved). Check-state changes are left out: the
// registration that follows carries the state.
func addEvents(s *status.ClusterFailover, reports []nodeReport) {
	from, to := s.At.Add(-eventsBefore), s.At.Add(eventsAfter)
	phaseAt := map[string]int{}
	for _, r := range reports {
		for _, e := range r.Events {
			if e.Kind != string(telemetry.KindSentinel) || e.Subject != s.Master || e.Time.Before(from) || e.Time.After(to) {
				continue
			}
			name, ok := phaseName(e.Type)
			if !ok {
				continue
			}
			if i, seen := phaseAt[name]; seen {
				if e.Time.Before(s.Phases[i].At) {
					s.Phases[i] = status.Phase{Name: name, At: e.Time, Node: r.Node}
				}
				continue
			}
			phaseAt[name] = len(s.Phases)
			s.Phases = append(s.Phases, status.Phase{Name: name, At: e.Time, Node: r.Node})
		}
	}
	// Actions count from the failover's first sign, not before it.
	first := s.At
	for _, p := range s.Phases {
		if p.At.Before(first) {
			first = p.At
		}
	}
	from = first.Add(-actionSlack)
	for _, r := range reports {
		for _, e := range r.Events {
			if e.Time.Before(from) || e.Time.After(to) || !isAction(e) {
				continue
			}
			s.Actions = append(s.Actions, status.Action{Node: r.Node, At: e.Time, What: e.Kind + " " + e.Type + " " + e.Subject, Detail: e.Detail})
		}
	}
}

// isAction reports whether an event is something an agent did to Consul
// or a proxy, about a Redis or a pool (not its own heartbeat or a
// Sentinel's registration).
func isAction(e status.Event) bool {
	switch e.Kind {
	case string(telemetry.KindTwemproxy), string(telemetry.KindHAProxy):
		return true
	case string(telemetry.KindConsul):
		if strings.HasPrefix(e.Subject, consulname.Agent+"-") || strings.HasPrefix(e.Subject, consulname.Sentinel+"-") {
			return false
		}
		return e.Type != "status"
	}
	return false
}

func phaseName(typ string) (string, bool) {
	if n, ok := sentinelPhases[typ]; ok {
		return n, true
	}
	if strings.HasPrefix(typ, "-failover-abort-") {
		return sentinelPhases["-failover-abort-"], true
	}
	return "", false
}

// gap is from Sentinel's first sign of the failover to the new master
// reachable through Consul and every proxy that moved.
func gap(s status.ClusterFailover) time.Duration {
	end := s.ConsulAt
	if s.TwemproxyAt.After(end) {
		end = s.TwemproxyAt
	}
	if s.HAProxyAt.After(end) {
		end = s.HAProxyAt
	}
	if end.IsZero() {
		return 0
	}
	start := s.At
	for _, p := range s.Phases {
		if (p.Name == "down" || p.Name == "failover started") && p.At.Before(start) {
			start = p.At
		}
	}
	if d := end.Sub(start); d > 0 {
		return d
	}
	return 0
}

func hasNode(nodes []string, n string) bool {
	for _, x := range nodes {
		if x == n {
			return true
		}
	}
	return false
}
