package httpapi

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

// Consul vocabulary BuildCluster reads (DESIGN §5). The discovery package
// writes it; it is repeated here so the view does not depend on the writer.
const (
	tagMaster  = "master"
	tagReplica = "replica"
	metaMaster = "master_name"
	metaPool   = "pool"
)

// BuildCluster turns what Consul's health API returns for the Redis, Sentinel
// and twemproxy services (every instance, whatever its status) into the
// cluster picture of /v1/cluster. truth is the Sentinel truth this agent holds
// and sentinelViews its links to Sentinels; both may be empty on an agent that
// follows no Sentinel. It is pure, so the agent only has to fetch.
//
// A node counts as a master when it carries the master tag and its check is
// not critical, which is exactly when Consul DNS answers it for
// master.redis.service.consul; more than one is a split brain. Replicas are
// listed whatever their status, so a broken link shows; everything else
// (critical masters, nodes with no role tag) lands in Other.
func BuildCluster(redis, sentinels, proxies []*api.ServiceEntry, truth []status.Master, sentinelViews []status.Sentinel) status.Cluster {
	c := status.Cluster{
		Shards:    []status.Shard{},
		Sentinels: []status.ClusterSentinel{},
		Proxies:   []status.ClusterProxy{},
	}
	shards := map[string]*status.Shard{}
	shard := func(name string) *status.Shard {
		if s, ok := shards[name]; ok {
			return s
		}
		s := &status.Shard{Name: name, Masters: []status.ClusterNode{}, Replicas: []status.ClusterNode{}, Other: []status.ClusterNode{}}
		shards[name] = s
		return s
	}
	truthBy := map[string]status.Master{}
	for _, m := range truth {
		truthBy[m.Name] = m
		shard(m.Name)
	}
	for _, e := range redis {
		if e == nil || e.Service == nil {
			continue
		}
		n := clusterNode(e)
		s := shard(shardName(e.Service))
		switch {
		case hasTag(n.Tags, tagMaster) && n.Status != api.HealthCritical:
			s.Masters = append(s.Masters, n)
		case hasTag(n.Tags, tagReplica):
			s.Replicas = append(s.Replicas, n)
		default:
			s.Other = append(s.Other, n)
		}
	}

	views := map[string]status.Sentinel{}
	for _, v := range sentinelViews {
		views[normAddr(v.Address)] = v
	}
	seen := map[string]bool{}
	for _, e := range sentinels {
		if e == nil || e.Service == nil {
			continue
		}
		cs := status.ClusterSentinel{ClusterNode: clusterNode(e)}
		key := normAddr(cs.Addr)
		if v, ok := views[key]; ok && !seen[key] {
			applyView(&cs, v, truthBy)
		}
		seen[key] = true
		c.Sentinels = append(c.Sentinels, cs)
	}
	for _, v := range sentinelViews {
		if seen[normAddr(v.Address)] {
			continue
		}
		seen[normAddr(v.Address)] = true
		cs := status.ClusterSentinel{ClusterNode: status.ClusterNode{
			Addr: v.Address, Output: "not registered in Consul", Tags: []string{},
		}}
		applyView(&cs, v, truthBy)
		c.Sentinels = append(c.Sentinels, cs)
	}

	for _, e := range proxies {
		if e == nil || e.Service == nil {
			continue
		}
		p := status.ClusterProxy{ClusterNode: clusterNode(e)}
		p.Pool = e.Service.Meta[metaPool]
		if p.Pool == "" && len(e.Service.Tags) > 0 {
			p.Pool = e.Service.Tags[0]
		}
		c.Proxies = append(c.Proxies, p)
	}

	names := make([]string, 0, len(shards))
	for name := range shards {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := shards[name]
		if m, ok := truthBy[name]; ok {
			s.Truth = &m
		}
		sortNodes(s.Masters)
		sortNodes(s.Replicas)
		sortNodes(s.Other)
		Assess(s)
		c.Shards = append(c.Shards, *s)
	}
	sort.SliceStable(c.Sentinels, func(i, j int) bool { return addrLess(c.Sentinels[i].Addr, c.Sentinels[j].Addr) })
	sort.SliceStable(c.Proxies, func(i, j int) bool {
		a, b := c.Proxies[i], c.Proxies[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return addrLess(a.Addr, b.Addr)
	})
	return c
}

// applyView copies what this agent knows of a Sentinel onto its cluster entry.
func applyView(cs *status.ClusterSentinel, v status.Sentinel, truth map[string]status.Master) {
	up := v.Up
	cs.Up = &up
	if len(v.View) > 0 {
		cs.View = make(map[string]string, len(v.View))
		for k, a := range v.View {
			cs.View[k] = a
		}
	}
	if !v.Up || len(truth) == 0 {
		return
	}
	agrees, compared := true, false
	for name, m := range truth {
		a, ok := v.View[name]
		if !ok || m.Addr == "" {
			continue
		}
		compared = true
		if !sameAddr(a, m.Addr) {
			agrees = false
		}
	}
	if compared {
		cs.Agrees = &agrees
	}
}

// Assess fills s.Health and s.Problems from the nodes and the truth, so the
// dashboard, the CLI and scripts judge a shard the same way. BuildCluster
// calls it; call it yourself on a Shard built some other way.
func Assess(s *status.Shard) {
	s.Problems = nil
	health := status.HealthOK
	worse := func(h string) {
		if healthRank(h) > healthRank(health) {
			health = h
		}
	}
	problem := func(h, format string, args ...any) {
		worse(h)
		s.Problems = append(s.Problems, fmt.Sprintf(format, args...))
	}
	switch len(s.Masters) {
	case 0:
		if s.Truth != nil && s.Truth.Addr != "" {
			problem(status.HealthDown, "no master in Consul (Sentinel says %s)", s.Truth.Addr)
		} else {
			problem(status.HealthDown, "no master in Consul")
		}
	case 1:
		m := s.Masters[0]
		if s.Truth != nil && s.Truth.Addr != "" && !sameAddr(m.Addr, s.Truth.Addr) {
			problem(status.HealthDegraded, "Consul master %s is not the Sentinel master %s", m.Addr, s.Truth.Addr)
		}
		if m.Status != api.HealthPassing {
			problem(status.HealthDegraded, "master %s is %s: %s", m.Addr, m.Status, orDash(m.Output))
		}
	default:
		addrs := make([]string, len(s.Masters))
		for i, m := range s.Masters {
			addrs[i] = m.Addr
		}
		problem(status.HealthSplitBrain, "split brain: %d masters in Consul (%s)", len(s.Masters), strings.Join(addrs, ", "))
	}
	if s.Truth != nil {
		switch {
		case s.Truth.Source == "stale":
			problem(status.HealthDegraded, "no Sentinel majority: showing the last known master")
		case s.Truth.Known > 0 && s.Truth.Agree < s.Truth.Known:
			problem(status.HealthDegraded, "%d/%d Sentinels agree", s.Truth.Agree, s.Truth.Known)
		}
	}
	for _, r := range s.Replicas {
		if r.Status != api.HealthPassing {
			problem(status.HealthDegraded, "replica %s is %s: %s", r.Addr, r.Status, orDash(r.Output))
		}
	}
	for _, o := range s.Other {
		problem(status.HealthDegraded, "%s is %s: %s", o.Addr, orDash(o.Status), orDash(o.Output))
	}
	if len(s.Replicas) == 0 && len(s.Masters) > 0 {
		problem(status.HealthDegraded, "no replica registered: nothing to fail over to")
	}
	s.Health = health
}

// healthRank orders shard health from best to worst.
func healthRank(h string) int {
	switch h {
	case status.HealthOK:
		return 0
	case status.HealthDegraded:
		return 1
	case status.HealthDown:
		return 2
	case status.HealthSplitBrain:
		return 3
	}
	return 1
}

// clusterNode flattens one health entry. The status is the worst of the
// service's and the node's checks (a dead node hides its services from DNS);
// the output is the service check's, prefixed by any failing node check's.
func clusterNode(e *api.ServiceEntry) status.ClusterNode {
	svc := e.Service
	n := status.ClusterNode{
		ServiceID: svc.ID,
		Tags:      append([]string{}, svc.Tags...),
		Status:    e.Checks.AggregatedStatus(),
	}
	host := svc.Address
	if e.Node != nil {
		n.Node = e.Node.Node
		if host == "" {
			host = e.Node.Address
		}
	}
	if svc.Port > 0 {
		n.Addr = net.JoinHostPort(host, strconv.Itoa(svc.Port))
	} else {
		n.Addr = host
	}
	if len(svc.Meta) > 0 {
		n.Meta = make(map[string]string, len(svc.Meta))
		for k, v := range svc.Meta {
			n.Meta[k] = v
		}
	}
	var outs []string
	for _, ch := range e.Checks {
		if ch.ServiceID == "" && ch.Status != api.HealthPassing {
			outs = append(outs, fmt.Sprintf("node check %q %s", ch.Name, ch.Status))
		}
	}
	for _, ch := range e.Checks {
		switch {
		case ch.ServiceID != svc.ID || strings.TrimSpace(ch.Output) == "":
		case ch.Type == "alias" && ch.Status == api.HealthPassing:
			// The agent's heartbeat: only news when it fails.
		case ch.Type == "alias":
			outs = append(outs, fmt.Sprintf("%s: %s (%s)", ch.Name, ch.Status, strings.TrimSpace(ch.Output)))
		default:
			outs = append(outs, strings.TrimSpace(ch.Output))
		}
	}
	n.Output = strings.Join(outs, "; ")
	if n.Status == "" {
		n.Status = api.HealthCritical
	}
	return n
}

// shardName is the Sentinel master name of a Redis service: its Meta, or
// failing that the DNS label of its <name>-master / <name>-replica tag.
func shardName(svc *api.AgentService) string {
	if n := svc.Meta[metaMaster]; n != "" {
		return n
	}
	for _, t := range svc.Tags {
		for _, suf := range []string{"-" + tagMaster, "-" + tagReplica} {
			if n, ok := strings.CutSuffix(t, suf); ok && n != "" {
				return n
			}
		}
	}
	return ""
}

func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}

func sortNodes(ns []status.ClusterNode) {
	sort.SliceStable(ns, func(i, j int) bool { return addrLess(ns[i].Addr, ns[j].Addr) })
}

// addrLess orders host:port addresses numerically where they are IPs, so
// 127.0.0.9 sorts before 127.0.0.10.
func addrLess(a, b string) bool {
	ha, pa := splitAddr(a)
	hb, pb := splitAddr(b)
	ia, ea := netip.ParseAddr(ha)
	ib, eb := netip.ParseAddr(hb)
	switch {
	case ea == nil && eb == nil && ia != ib:
		return ia.Less(ib)
	case ea != nil || eb != nil:
		if ha != hb {
			return ha < hb
		}
	}
	return pa < pb
}

func splitAddr(a string) (string, int) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return a, 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// normAddr makes host:port comparable: lower case, canonical IP, no leading
// zeros in the port.
func normAddr(a string) string {
	a = strings.TrimSpace(a)
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return strings.ToLower(a)
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		h = ip.Unmap().String()
	}
	if n, err := strconv.Atoi(p); err == nil {
		p = strconv.Itoa(n)
	}
	return net.JoinHostPort(h, p)
}

func sameAddr(a, b string) bool { return a != "" && b != "" && normAddr(a) == normAddr(b) }

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "—"
	}
	return s
}
