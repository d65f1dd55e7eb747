// Package statusview is the view model of the status contract: what the
// dashboard (agent/httpapi) and the terminal table of `redis-consul-agent
// status` (agent/statusclient) show, derived once from a status.Snapshot
// and a status.Cluster so that both read the same. It is pure: no I/O.
package statusview

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// View is everything one render needs.
type View struct {
	Now      time.Time
	Snap     status.Snapshot
	Cluster  status.Cluster
	Summary  Summary
	Shards   []Shard
	Proxies  []Proxy
	Timeline []Failover
	Events   []status.Event
	// EventsTotal is how many events the agent holds; Events is the newest part.
	EventsTotal int
	// Peers is how many other agents answered for the timeline; Silent are those
	// that did not answer (or were not asked), named so none is hidden.
	Peers   int
	Silent  []status.Peer
	Refresh time.Duration
}

// Summary is the header line: how many shards are in which state.
type Summary struct {
	Shards, OK, Degraded, SplitBrain, Down int
	// Verdict is the worst shard verdict, or "unknown" with no shard at all.
	Verdict string
	// Text is the one-line verdict for the page title and the CLI.
	Text string
}

// Shard is one shard as shown: the contract's Shard and what this agent
// adds to it (its Sentinel links, its twemproxy routes, its failovers).
type Shard struct {
	status.Shard
	// Master is the node to show big: the one master, or the Sentinel truth
	// when Consul has none, or the first of a split brain.
	Master      *status.ClusterNode
	MasterIsAlt bool // Master is not in Consul as master: only Sentinel names it
	Agree       string
	AgreeOK     bool
	Sentinels   []SentinelChip
	Routes      []Route
	Failovers   int
	LastFailAt  time.Time
}

// SentinelChip is one Sentinel's opinion of one shard.
type SentinelChip struct {
	Addr  string
	State string // agree, disagree, down, unknown
	Says  string // the address it names, when it disagrees
	Title string
}

// Route is one local proxy server that routes a shard: a twemproxy
// server line (Pool is the pool) or a HAProxy server (Pool is
// backend/server).
type Route struct {
	Kind                    string // status.ProxyTwemproxy or status.ProxyHAProxy
	Proxy, Pool, Addr, Want string
	Matches                 bool
}

// Proxy is one registered twemproxy pool or HAProxy frontend, with this
// agent's own view when it manages it.
type Proxy struct {
	status.ClusterProxy
	Local   *status.Pool  // set when this agent manages the pool
	Process *status.Proxy // the local twemproxy the pool belongs to
	// Frontend and HAProxy are set when this agent drives the frontend.
	Frontend *status.HAProxyFrontend
	HAProxy  *status.HAProxyStatus
	// Follow says in words whether the pool's servers follow Sentinel, from
	// this agent's own reading; empty when another agent manages the pool
	// (its check output, in ClusterProxy.Output, says it then). For a
	// HAProxy frontend it is read from the servers its Meta names.
	Follow string
}

// Failover is one failover this agent learnt of, with the delays after
// which each target applied it here.
type Failover struct {
	status.Failover
	Consul, Twemproxy, HAProxy time.Duration // 0: not applied (by this agent, when not Merged)
	// Merged is true when the row is the cluster's story, merged from
	// Nodes; false when it is only what this agent saw.
	Merged bool
	Nodes  []string
	// Steps are Sentinel's phases and every agent's actions, oldest first.
	Steps []Step
	Gap   time.Duration // client-visible, 0 when not known
}

// Step is one line of a failover's story.
type Step struct {
	At     time.Time
	After  time.Duration // since the story's first step
	Node   string
	Source string // "sentinel" for a phase, "agent" for an action
	What   string
	Detail string
}

// MaxEvents is how many of the journal's events the dashboard lists.
const MaxEvents = 100

// Build derives the view from one agent's snapshot and the cluster it
// sees; refresh is how often the dashboard polls (0 for the terminal).
func Build(snap status.Snapshot, cl status.Cluster, now time.Time, refresh time.Duration) View {
	v := View{Now: now, Snap: snap, Cluster: cl, Refresh: refresh}
	v.Shards = shards(snap, cl)
	for _, sv := range v.Shards {
		switch sv.Verdict {
		case status.VerdictOK:
			v.Summary.OK++
		case status.VerdictSplitBrain:
			v.Summary.SplitBrain++
		case status.VerdictDown:
			v.Summary.Down++
		default:
			v.Summary.Degraded++
		}
	}
	v.Summary.Shards = len(v.Shards)
	v.Summary.Verdict, v.Summary.Text = verdict(v.Summary, cl.Error)
	v.Proxies = proxies(snap, cl)
	v.Timeline = timeline(snap, cl)
	for _, p := range cl.Peers {
		if p.Error != "" {
			v.Silent = append(v.Silent, p)
		}
	}
	v.Peers = len(cl.Peers) - len(v.Silent)

	v.EventsTotal = len(snap.Events)
	for i := len(snap.Events) - 1; i >= 0 && len(v.Events) < MaxEvents; i-- {
		v.Events = append(v.Events, snap.Events[i])
	}
	return v
}

// routes are the proxy servers this agent drives, by master name.
func routes(snap status.Snapshot) map[string][]Route {
	out := map[string][]Route{}
	for _, p := range snap.Proxies {
		for _, pool := range p.Pools {
			for _, srv := range pool.Servers {
				out[srv.Name] = append(out[srv.Name], Route{
					Kind: status.ProxyTwemproxy, Proxy: p.Name, Pool: pool.Name, Addr: srv.Addr, Want: srv.Want, Matches: srv.Matches,
				})
			}
		}
	}
	for _, h := range snap.HAProxy {
		for _, srv := range h.Servers {
			out[srv.MasterName] = append(out[srv.MasterName], Route{
				Kind: status.ProxyHAProxy, Proxy: h.Name, Pool: srv.Backend + "/" + srv.Server, Addr: srv.Addr, Want: srv.Want, Matches: srv.Matches,
			})
		}
	}
	return out
}

// shards is one row per shard of the cluster: its master, the Sentinels
// that monitor it, this agent's routes to it and its failovers.
func shards(snap status.Snapshot, cl status.Cluster) []Shard {
	rs := routes(snap)
	failCount := map[string]int{}
	lastFail := map[string]time.Time{}
	for _, f := range snap.Failovers {
		failCount[f.Master]++
		if f.At.After(lastFail[f.Master]) {
			lastFail[f.Master] = f.At
		}
	}
	var out []Shard
	for _, sh := range cl.Shards {
		sv := Shard{Shard: sh, Routes: rs[sh.Name], Failovers: failCount[sh.Name], LastFailAt: lastFail[sh.Name]}
		switch {
		case len(sh.Masters) > 0:
			m := sh.Masters[0]
			sv.Master = &m
		case sh.Truth != nil && sh.Truth.Addr != "":
			sv.Master = &status.ClusterNode{Addr: sh.Truth.Addr, Status: api.HealthCritical, Output: "named by Sentinel, not a master in Consul"}
			sv.MasterIsAlt = true
		}
		if t := sh.Truth; t != nil && t.Total > 0 {
			sv.Agree = fmt.Sprintf("%d/%d agree", t.Agree, t.Total)
			sv.AgreeOK = t.Agree == t.Total
		}
		for _, cs := range cl.Sentinels {
			if monitors(cs, sh.Name) {
				sv.Sentinels = append(sv.Sentinels, chip(cs, sh))
			}
		}
		out = append(out, sv)
	}
	return out
}

// proxies is one row per proxy pool or frontend in the cluster, with this
// agent's own view of the ones it drives.
func proxies(snap status.Snapshot, cl status.Cluster) []Proxy {
	type localPool struct {
		pool *status.Pool
		proc *status.Proxy
	}
	local := map[string]localPool{}
	for i := range snap.Proxies {
		p := &snap.Proxies[i]
		for j := range p.Pools {
			if id := p.Pools[j].ServiceID; id != "" {
				local[id] = localPool{&p.Pools[j], p}
			}
		}
	}
	frontends := localFrontends(snap.HAProxy)
	var out []Proxy
	for _, cp := range cl.Proxies {
		pv := Proxy{ClusterProxy: cp}
		if cp.Kind == status.ProxyHAProxy {
			pv.Follow = followFrontend(cp)
			if l, ok := frontends[cp.ServiceID]; ok {
				pv.Frontend, pv.HAProxy = l.frontend, l.haproxy
			}
		} else if l, ok := local[cp.ServiceID]; ok {
			pv.Local, pv.Process = l.pool, l.proc
			pv.Follow = follow(l.pool.Servers)
		}
		out = append(out, pv)
	}
	return out
}

// timeline is the failovers, newest first: the cluster's stories when the
// peers answered, else what this agent saw.
func timeline(snap status.Snapshot, cl status.Cluster) []Failover {
	var out []Failover
	if len(cl.Failovers) > 0 {
		for i := len(cl.Failovers) - 1; i >= 0; i-- {
			out = append(out, story(cl.Failovers[i]))
		}
		return out
	}
	for i := len(snap.Failovers) - 1; i >= 0; i-- {
		out = append(out, timed(Failover{Failover: snap.Failovers[i]}))
	}
	return out
}

// timed fills the reaction times from the failover's own times.
func timed(fv Failover) Failover {
	if !fv.ConsulAt.IsZero() {
		fv.Consul = fv.ConsulAt.Sub(fv.At)
	}
	if !fv.TwemproxyAt.IsZero() {
		fv.Twemproxy = fv.TwemproxyAt.Sub(fv.At)
	}
	if !fv.HAProxyAt.IsZero() {
		fv.HAProxy = fv.HAProxyAt.Sub(fv.At)
	}
	return fv
}

// story is one merged failover as a timeline row with its steps.
func story(cf status.ClusterFailover) Failover {
	fv := timed(Failover{
		Failover: status.Failover{Master: cf.Master, From: cf.From, To: cf.To, At: cf.At, ConsulAt: cf.ConsulAt, TwemproxyAt: cf.TwemproxyAt, HAProxyAt: cf.HAProxyAt},
		Merged:   true, Nodes: cf.Nodes, Gap: cf.Gap,
	})
	for _, p := range cf.Phases {
		fv.Steps = append(fv.Steps, Step{At: p.At, Node: p.Node, Source: "sentinel", What: "Sentinel: " + p.Name})
	}
	for _, a := range cf.Actions {
		fv.Steps = append(fv.Steps, Step{At: a.At, Node: a.Node, Source: "agent", What: a.What, Detail: a.Detail})
	}
	sort.SliceStable(fv.Steps, func(i, j int) bool { return fv.Steps[i].At.Before(fv.Steps[j].At) })
	if len(fv.Steps) > 0 {
		start := fv.Steps[0].At
		for i := range fv.Steps {
			fv.Steps[i].After = fv.Steps[i].At.Sub(start)
		}
	}
	return fv
}

// follow sums up whether a pool's servers follow Sentinel, in the words of
// the pool's check: a passing pool is not "on the right masters" unless
// its servers are named after masters the Sentinels report.
func follow(servers []status.Server) string {
	follows, wrong := 0, 0
	for _, s := range servers {
		if s.Follows {
			follows++
			if !s.Matches {
				wrong++
			}
		}
	}
	switch {
	case wrong > 0:
		return plural(wrong, "server") + " not on the Sentinel master"
	case follows == 0:
		return "not following Sentinel"
	case follows == len(servers):
		return "on the Sentinel masters"
	}
	return fmt.Sprintf("%d of %d servers follow Sentinel", follows, len(servers))
}

type localFrontend struct {
	frontend *status.HAProxyFrontend
	haproxy  *status.HAProxyStatus
}

// localFrontends are the frontends this agent drives, by service ID.
func localFrontends(hs []status.HAProxyStatus) map[string]localFrontend {
	out := map[string]localFrontend{}
	for i := range hs {
		h := &hs[i]
		for j := range h.Frontends {
			if id := h.Frontends[j].ServiceID; id != "" {
				out[id] = localFrontend{&h.Frontends[j], h}
			}
		}
	}
	return out
}

// followFrontend sums up whether a HAProxy frontend's servers, as its Meta
// names them, point at the Sentinel truth this agent holds.
func followFrontend(p status.ClusterProxy) string {
	wrong := 0
	for _, s := range p.Servers {
		if !s.Matches {
			wrong++
		}
	}
	switch {
	case len(p.Servers) == 0:
		return "names no server"
	case wrong > 0:
		return plural(wrong, "server") + " not on the Sentinel master"
	case p.Follows == nil:
		return "no Sentinel truth here to compare"
	}
	return "on the Sentinel masters"
}

// verdict is the worst state and the words for it.
func verdict(s Summary, clusterErr string) (string, string) {
	switch {
	case s.SplitBrain > 0:
		return status.VerdictSplitBrain, plural(s.SplitBrain, "shard") + " in split brain"
	case s.Down > 0:
		return status.VerdictDown, plural(s.Down, "shard") + " without a master"
	case s.Degraded > 0:
		return status.VerdictDegraded, plural(s.Degraded, "shard") + " degraded"
	case s.Shards == 0 && clusterErr != "":
		return "unknown", "Consul unreachable"
	case s.Shards == 0:
		return "unknown", "no shard registered in Consul"
	}
	return status.VerdictOK, "all " + plural(s.Shards, "shard") + " healthy"
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// monitors reports whether a Sentinel watches the shard, by its Consul tags
// or by what this agent read from it.
func monitors(cs status.ClusterSentinel, shard string) bool {
	if _, ok := cs.View[shard]; ok {
		return true
	}
	for _, t := range cs.Tags {
		if t == shard || strings.EqualFold(t, shard) {
			return true
		}
	}
	return false
}

func chip(cs status.ClusterSentinel, sh status.Shard) SentinelChip {
	c := SentinelChip{Addr: cs.Addr, State: "unknown"}
	says, seen := cs.View[sh.Name]
	switch {
	case cs.Up != nil && !*cs.Up:
		c.State = "down"
		c.Title = "this agent cannot reach it"
	case seen && sh.Truth != nil && sh.Truth.Addr != "" && addr.Same(says, sh.Truth.Addr):
		c.State = "agree"
		c.Title = "names " + says
	case seen && sh.Truth != nil && sh.Truth.Addr != "":
		c.State = "disagree"
		c.Says = says
		c.Title = "names " + says + ", the truth is " + sh.Truth.Addr
	case cs.Status == api.HealthCritical:
		c.State = "down"
		c.Title = "critical in Consul: " + cs.Output
	default:
		c.Title = "Consul: " + cs.Status
	}
	return c
}

// ShortDur prints a duration the way operators read reaction times: 3.2ms,
// 850ms, 2.4s, 3m10s.
func ShortDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Ago is "12s ago", "3m05s ago"; "—" for a zero time.
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return ShortDur(d.Truncate(time.Second)) + " ago"
}

// SortedKeys returns the keys of m in order.
func SortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// OrDash shows an empty text as a dash, so an empty cell still reads as
// "nothing" rather than a layout glitch.
func OrDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "—"
	}
	return s
}
