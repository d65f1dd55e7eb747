package statusclient

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/agent/statusview"
)

// The helpers the table shares with the dashboard.
var (
	orDash   = statusview.OrDash
	shortDur = statusview.ShortDur
	ago      = statusview.Ago
)

// TextOptions tune WriteText.
type TextOptions struct {
	// Now is the reference for "ago" columns; default: Report.Status.Now.
	Now time.Time
	// Failovers and Events cap those lists (newest first); defaults 10 and 15.
	Failovers, Events int
	// Width truncates free-text columns to this many characters; default 72.
	Width int
}

// WriteText renders r as terminal tables, one block per topic, worst news
// (the cluster) first.
func WriteText(w io.Writer, r status.Report, o TextOptions) error {
	if o.Now.IsZero() {
		o.Now = r.Status.Now
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Failovers <= 0 {
		o.Failovers = 10
	}
	if o.Events <= 0 {
		o.Events = 15
	}
	if o.Width <= 0 {
		o.Width = 72
	}
	t := &textReport{r: r, o: o, p: &printer{w: w}, v: statusview.Build(r.Status, r.Cluster, o.Now, 0)}
	t.cut = func(s string) string { return clip(s, o.Width) }
	t.header()
	t.shards()
	t.clusterSentinels()
	t.pools()
	if len(t.v.Timeline) > 0 || len(t.v.Silent) > 0 {
		writeTimeline(t.p, t.v, o, t.cut)
	}
	t.local()
	t.proxies()
	t.haproxies()
	t.events()
	return t.p.err
}

// textReport is one rendering: each method writes one block.
type textReport struct {
	r   status.Report
	v   statusview.View
	o   TextOptions
	p   *printer
	cut func(string) string
}

// header is the agent's line and the cluster's verdict.
func (t *textReport) header() {
	r, v, o, p := t.r, t.v, t.o, t.p
	s := r.Status
	head := fmt.Sprintf("redis-consul-agent on %s (%s)", orDash(s.Node), orDash(s.Version))
	if !s.StartedAt.IsZero() {
		if up := o.Now.Sub(s.StartedAt); up < time.Second {
			head += ", just started"
		} else {
			head += ", up " + shortDur(up.Truncate(time.Second))
		}
	}
	p.line(head)
	verdictLine := "Cluster: " + v.Summary.Text
	if v.Summary.Shards > 0 {
		verdictLine += fmt.Sprintf(" (%d ok, %d degraded, %d without master, %d split brain)",
			v.Summary.OK, v.Summary.Degraded, v.Summary.Down, v.Summary.SplitBrain)
	}
	p.line(verdictLine)
	if r.Cluster.Error != "" {
		p.line("Consul: " + r.Cluster.Error)
	}

}

// shards is the SHARDS and NODES tables, as Consul sees them.
func (t *textReport) shards() {
	v, o, p, cut := t.v, t.o, t.p, t.cut
	if len(v.Shards) > 0 {
		t := p.table("SHARDS (as Consul sees them)", "SHARD", "VERDICT", "MASTER", "SENTINELS", "REPLICAS", "SINCE")
		for _, sh := range v.Shards {
			master := "none"
			if sh.Master != nil {
				master = sh.Master.Addr
				if sh.MasterIsAlt {
					master += " (Sentinel only)"
				}
			}
			for _, m := range sh.Masters[min(1, len(sh.Masters)):] {
				master += " + " + m.Addr
			}
			agree := sh.Agree
			if agree == "" {
				agree = "—"
			}
			linked := 0
			for _, rp := range sh.Replicas {
				if rp.Status == api.HealthPassing {
					linked++
				}
			}
			sinceCol := "—"
			if sh.Truth != nil && !sh.Truth.Since.IsZero() {
				sinceCol = ago(o.Now, sh.Truth.Since)
			}
			verdict := sh.Verdict
			if verdict != status.VerdictOK {
				verdict = strings.ToUpper(verdict)
			}
			t.row(orDash(sh.Name), verdict, master, agree, fmt.Sprintf("%d/%d linked", linked, len(sh.Replicas)), sinceCol)
			for _, pr := range sh.Problems {
				t.row("", "  ! "+cut(pr))
			}
		}
		t.flush()

		t = p.table("NODES", "SHARD", "ROLE", "ADDRESS", "NODE", "CHECK", "OUTPUT")
		for _, sh := range v.Shards {
			for _, n := range sh.Masters {
				t.row(orDash(sh.Name), "master", n.Addr, orDash(n.Node), n.Status, cut(n.Output))
			}
			for _, n := range sh.Replicas {
				t.row(orDash(sh.Name), "replica", n.Addr, orDash(n.Node), n.Status, cut(n.Output))
			}
			for _, n := range sh.Other {
				t.row(orDash(sh.Name), "none", n.Addr, orDash(n.Node), n.Status, cut(n.Output))
			}
		}
		t.flush()
	}

}

// clusterSentinels is the SENTINELS table of the cluster view.
func (t *textReport) clusterSentinels() {
	r, p, cut := t.r, t.p, t.cut
	if len(r.Cluster.Sentinels) > 0 {
		t := p.table("SENTINELS", "ADDRESS", "NODE", "CHECK", "LINK", "AGREES", "VIEW")
		for _, cs := range r.Cluster.Sentinels {
			link, agrees := "—", "—"
			if cs.Up != nil {
				link = map[bool]string{true: "up", false: "down"}[*cs.Up]
			}
			if cs.Agrees != nil {
				agrees = map[bool]string{true: "yes", false: "NO"}[*cs.Agrees]
			}
			var view []string
			for _, k := range statusview.SortedKeys(cs.View) {
				view = append(view, k+"="+cs.View[k])
			}
			t.row(cs.Addr, orDash(cs.Node), orDash(cs.Status), link, agrees, cut(orDash(strings.Join(view, " "))))
		}
		t.flush()
	}

}

// pools is the PROXIES table of the cluster view: twemproxy pools and
// HAProxy frontends, each frontend with the servers its Meta names.
func (t *textReport) pools() {
	v, p, cut := t.v, t.p, t.cut
	if len(v.Proxies) > 0 {
		t := p.table("PROXIES (twemproxy pools, HAProxy frontends)", "KIND", "POOL", "ADDRESS", "NODE", "CHECK", "FOLLOWS", "OUTPUT")
		for _, pv := range v.Proxies {
			kind := pv.Kind
			if kind == "" {
				kind = status.ProxyTwemproxy
			}
			t.row(kind, orDash(pv.Pool), orDash(pv.Addr), orDash(pv.Node), pv.Status, orDash(pv.Follow), cut(pv.Output))
			for _, s := range pv.Servers {
				line := "  " + s.Name + " -> " + orDash(s.Addr)
				if !s.Matches {
					line += " (NOT the Sentinel master " + orDash(s.Want) + ")"
				}
				t.row("", line)
			}
		}
		t.flush()
	}

}

// local is what this agent registers and the truth it follows.
func (t *textReport) local() {
	r, o, p, cut := t.r, t.o, t.p, t.cut
	s := r.Status
	if len(s.Instances) > 0 {
		t := p.table("LOCAL REDIS", "SERVICE", "ADDRESS", "SHARD", "ROLE", "CHECK", "WHY")
		for _, in := range s.Instances {
			addr := in.Announce
			if addr == "" {
				addr = in.Address
			}
			t.row(in.ServiceID, addr, orDash(in.MasterName), in.Role, in.Status, cut(in.Why))
		}
		t.flush()
	}
	if len(s.LocalSentinels) > 0 {
		t := p.table("LOCAL SENTINELS", "SERVICE", "ADDRESS", "MONITORS", "CHECK", "WHY")
		for _, ls := range s.LocalSentinels {
			t.row(ls.ServiceID, ls.Address, orDash(strings.Join(ls.Masters, ",")), ls.Status, cut(ls.Why))
		}
		t.flush()
	}
	if len(s.Masters) > 0 {
		t := p.table("SENTINEL TRUTH", "SHARD", "MASTER", "SOURCE", "AGREE", "SINCE")
		for _, m := range s.Masters {
			t.row(m.Name, m.Addr, m.Source, fmt.Sprintf("%d/%d", m.Agree, m.Total), ago(o.Now, m.Since))
		}
		t.flush()
	}
	if len(s.Sentinels) > 0 {
		t := p.table("SENTINEL LINKS", "SENTINEL", "LINK", "VIEW", "ERROR")
		for _, sn := range s.Sentinels {
			var view []string
			for _, k := range statusview.SortedKeys(sn.View) {
				view = append(view, k+"="+sn.View[k])
			}
			link := "up"
			if !sn.Up {
				link = "DOWN"
			}
			t.row(sn.Address, link, cut(orDash(strings.Join(view, " "))), cut(orDash(sn.LastError)))
		}
		t.flush()
	}
}

// proxies is the twemproxy instances this agent manages and their servers.
func (t *textReport) proxies() {
	r, o, p, cut := t.r, t.o, t.p, t.cut
	s := r.Status
	if len(s.Proxies) > 0 {
		t := p.table("TWEMPROXY MANAGED HERE", "PROXY", "MODE", "CONFIG HASH", "LAST RESTART", "TOOK", "BLACKOUT", "RESTARTS", "ROLLBACKS")
		for _, px := range s.Proxies {
			last, took := "none yet", "—"
			if lr := px.LastRestart; lr != nil {
				last = lr.Result + " " + ago(o.Now, lr.At)
				took = shortDur(lr.Duration)
			}
			t.row(px.Name, orDash(px.Mode), clip(orDash(px.ConfigHash), 12), last, took, shortDur(px.Blackout),
				fmt.Sprint(px.Restarts), fmt.Sprint(px.Rollbacks))
			if px.LastError != "" {
				t.row("", "  ! "+cut(px.LastError))
			}
		}
		t.flush()
		t = p.table("TWEMPROXY SERVERS", "PROXY", "POOL", "LISTEN", "SERVER", "ADDRESS", "MATCHES SENTINEL")
		for _, px := range s.Proxies {
			for _, pool := range px.Pools {
				if len(pool.Servers) == 0 {
					t.row(px.Name, pool.Name, pool.Listen, "—", "—", "—")
				}
				for _, srv := range pool.Servers {
					m := "yes"
					switch {
					case !srv.Follows:
						m = "not a Sentinel master name"
					case !srv.Matches:
						m = "NO"
						if srv.Want != "" {
							m += ", want " + srv.Want
						}
					}
					t.row(px.Name, pool.Name, pool.Listen, srv.Name, srv.Addr, m)
				}
			}
		}
		t.flush()
	}
}

// haproxies is the HAProxy instances this agent drives: the runtime API,
// the last move and error, then each server and where it points.
func (t *textReport) haproxies() {
	r, o, p, cut := t.r, t.o, t.p, t.cut
	hs := r.Status.HAProxy
	if len(hs) == 0 {
		return
	}
	tb := p.table("HAPROXY DRIVEN HERE", "HAPROXY", "RUNTIME API", "API", "LAST MOVE", "REACTION", "MOVES", "RECONCILES")
	for _, h := range hs {
		api, last, reaction := "up", "none yet", "—"
		if !h.Reachable {
			api = "DOWN"
		}
		if m := h.LastMove; m != nil {
			last = m.Server + " " + m.From + " -> " + m.To + " " + ago(o.Now, m.At)
			reaction = shortDur(m.Reaction)
		}
		tb.row(h.Name, h.RuntimeAPI, api, last, reaction, fmt.Sprint(h.Moves), fmt.Sprint(h.Reconciles))
		if h.LastError != "" {
			tb.row("", "  ! "+cut(h.LastError)+" ("+ago(o.Now, h.LastErrorAt)+")")
		}
	}
	tb.flush()
	tb = p.table("HAPROXY SERVERS", "HAPROXY", "SERVER", "SHARD", "ADDRESS", "MATCHES SENTINEL")
	for _, h := range hs {
		for _, s := range h.Servers {
			m := "yes"
			if !s.Matches {
				m = "NO"
				if s.Want != "" {
					m += ", want " + s.Want
				}
				if s.Why != "" {
					m += ": " + s.Why
				}
			}
			tb.row(h.Name, s.Backend+"/"+s.Server, s.MasterName, orDash(s.Addr), cut(m))
		}
	}
	tb.flush()
	tb = p.table("HAPROXY FRONTENDS", "HAPROXY", "FRONTEND", "ADDRESS", "SERVICE", "CHECK", "WHY")
	for _, h := range hs {
		for _, f := range h.Frontends {
			tb.row(h.Name, f.Name, orDash(f.Address), f.ServiceID, f.Status, cut(f.Why))
		}
	}
	tb.flush()
}

// events is the newest events of this agent's journal.
func (t *textReport) events() {
	v, o, p, cut := t.v, t.o, t.p, t.cut
	if len(v.Events) > 0 {
		n := min(o.Events, len(v.Events))
		t := p.table(fmt.Sprintf("EVENTS (newest %d of %d)", n, v.EventsTotal), "TIME", "LEVEL", "KIND", "TYPE", "SUBJECT", "DETAIL")
		for _, e := range v.Events[:n] {
			t.row(e.Time.Local().Format("15:04:05.000"), e.Level, e.Kind, e.Type, e.Subject, cut(e.Detail))
		}
		t.flush()
	}
}

// writeTimeline prints the failovers, each with its story when the agent
// merged one from its peers, and names the peers that did not answer.
func writeTimeline(p *printer, v statusview.View, o TextOptions, cut func(string) string) {
	title := "FAILOVERS (seen by this agent, newest first)"
	if v.Peers > 0 {
		title = fmt.Sprintf("FAILOVERS (merged from this agent and %d more, newest first)", v.Peers)
	}
	t := p.table(title, "WHEN", "SHARD", "OLD -> NEW", "CONSUL", "TWEMPROXY", "HAPROXY", "GAP")
	for i, f := range v.Timeline {
		if i == o.Failovers {
			break
		}
		t.row(f.At.Local().Format("2006-01-02 15:04:05")+" ("+ago(o.Now, f.At)+")", f.Master,
			orDash(f.From)+" -> "+f.To, shortDur(f.Consul), shortDur(f.Twemproxy), shortDur(f.HAProxy), shortDur(f.Gap))
		for _, st := range f.Steps {
			after := "0"
			if st.After > 0 {
				after = "+" + shortDur(st.After)
			}
			line := after + " " + st.Node + ": " + st.What
			if st.Detail != "" {
				line += " (" + st.Detail + ")"
			}
			t.row("", "  "+cut(line))
		}
	}
	t.flush()
	for _, peer := range v.Silent {
		addr := ""
		if peer.Addr != "" {
			addr = " (" + peer.Addr + ")"
		}
		p.line("! agent " + peer.Node + addr + " did not answer: " + cut(peer.Error))
	}
}

// printer writes blocks separated by blank lines and remembers the first
// write error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(s string) {
	if p.err == nil {
		_, p.err = fmt.Fprintln(p.w, s)
	}
}

type table struct {
	p  *printer
	tw *tabwriter.Writer
}

func (p *printer) table(title string, cols ...string) *table {
	p.line("")
	p.line(title)
	t := &table{p: p, tw: tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)}
	t.row(cols...)
	return t
}

func (t *table) row(cells ...string) {
	if t.p.err == nil {
		for i, c := range cells {
			// A tab or newline inside a cell would break the columns.
			cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
		}
		_, t.p.err = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
	}
}

func (t *table) flush() {
	if err := t.tw.Flush(); err != nil && t.p.err == nil {
		t.p.err = err
	}
}

// clip shortens s to n runes with an ellipsis.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
