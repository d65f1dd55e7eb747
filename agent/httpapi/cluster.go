package httpapi

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// BuildCluster turns what Consul's health API returns for the Redis, Sentinel
// and twemproxy services (every instance, whatever its status, as
// consulhealth reads them) into the
// cluster picture of /v1/cluster (AddFrontends adds the HAProxy frontends). truth is the Sentinel truth this agent holds
// and sentinelViews its links to Sentinels; both may be empty on an agent that
// follows no Sentinel. It is pure, so the agent only has to fetch.
//
// A node counts as a master when Consul DNS answers it for
// master.redis.service.consul (discovery.AnswersAsMaster); more than one is
// a split brain, judged by discovery.ShardVerdict. Replicas are listed
// whatever their status, so a broken link shows; everything else (critical
// masters, nodes with no role tag) lands in Other.
func BuildCluster(redis, sentinels, proxies []consulhealth.Instance, truth []status.Master, sentinelViews []status.Sentinel) status.Cluster {
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
		n := clusterNode(e)
		s := shard(shardName(e))
		switch {
		case discovery.AnswersAsMaster(n.Tags, n.Status):
			s.Masters = append(s.Masters, n)
		case hasTag(n.Tags, consulname.RoleReplica):
			s.Replicas = append(s.Replicas, n)
		default:
			s.Other = append(s.Other, n)
		}
	}

	c.Sentinels = clusterSentinels(sentinels, sentinelViews, truthBy)
	for _, e := range proxies {
		p := status.ClusterProxy{ClusterNode: clusterNode(e), Kind: status.ProxyTwemproxy, Proxy: e.Meta[consulname.MetaProxy]}
		p.Pool = e.Meta[consulname.MetaPool]
		if p.Pool == "" && len(e.Tags) > 0 {
			p.Pool = e.Tags[0]
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
	sortProxies(c.Proxies)
	return c
}

// clusterSentinels lists the Sentinels registered in Consul, with what this
// agent's links to them say, and then those it links to that Consul does
// not list.
func clusterSentinels(sentinels []consulhealth.Instance, sentinelViews []status.Sentinel, truthBy map[string]status.Master) []status.ClusterSentinel {
	out := []status.ClusterSentinel{}
	views := map[string]status.Sentinel{}
	for _, v := range sentinelViews {
		views[addr.Normalize(v.Address)] = v
	}
	seen := map[string]bool{}
	for _, e := range sentinels {
		cs := status.ClusterSentinel{ClusterNode: clusterNode(e)}
		key := addr.Normalize(cs.Addr)
		if v, ok := views[key]; ok && !seen[key] {
			applyView(&cs, v, truthBy)
		}
		seen[key] = true
		out = append(out, cs)
	}
	for _, v := range sentinelViews {
		key := addr.Normalize(v.Address)
		if seen[key] {
			continue
		}
		seen[key] = true
		cs := status.ClusterSentinel{ClusterNode: status.ClusterNode{
			Addr: v.Address, Output: "not registered in Consul", Tags: []string{},
		}}
		applyView(&cs, v, truthBy)
		out = append(out, cs)
	}
	return out
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
		if !addr.Same(a, m.Addr) {
			agrees = false
		}
	}
	if compared {
		cs.Agrees = &agrees
	}
}

// Assess fills s.Verdict and s.Problems by discovery.ShardVerdict, so the
// dashboard, the CLI and scripts judge a shard the same way. BuildCluster
// calls it; call it yourself on a Shard built some other way.
func Assess(s *status.Shard) {
	st := discovery.ShardState{
		Masters:  shardNodes(s.Masters),
		Replicas: shardNodes(s.Replicas),
		Other:    shardNodes(s.Other),
	}
	if t := s.Truth; t != nil {
		st.Truth = &discovery.Master{Name: t.Name, Addr: t.Addr, Source: t.Source, Since: t.Since, Agree: t.Agree, Total: t.Total}
	}
	v, problems := discovery.ShardVerdict(st)
	s.Verdict, s.Problems = string(v), problems
}

func shardNodes(ns []status.ClusterNode) []discovery.ShardNode {
	out := make([]discovery.ShardNode, len(ns))
	for i, n := range ns {
		out[i] = discovery.ShardNode{Addr: n.Addr, Status: n.Status, Output: n.Output}
	}
	return out
}

// clusterNode flattens one instance. The status is the worst of the
// service's and the node's checks (a dead node hides its services from DNS);
// the output is the service check's, prefixed by any failing node check's.
func clusterNode(in consulhealth.Instance) status.ClusterNode {
	n := status.ClusterNode{
		ServiceID: in.ID,
		Node:      in.Node,
		Addr:      in.Address,
		Tags:      append([]string{}, in.Tags...),
		Status:    in.Status,
	}
	if len(in.Meta) > 0 {
		n.Meta = make(map[string]string, len(in.Meta))
		for k, v := range in.Meta {
			n.Meta[k] = v
		}
	}
	var outs []string
	for _, ch := range in.Checks {
		if ch.ServiceID == "" && ch.Status != api.HealthPassing {
			outs = append(outs, fmt.Sprintf("node check %q %s", ch.Name, ch.Status))
		}
	}
	for _, ch := range in.Checks {
		switch {
		case ch.ServiceID != in.ID || strings.TrimSpace(ch.Output) == "":
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

// shardName is the Sentinel master name of a Redis instance: its Meta, or
// failing that the name in its <name>-master / <name>-replica tag (the DNS
// label of the name, which is the name itself when it is DNS-friendly).
func shardName(in consulhealth.Instance) string {
	if n := in.Meta[consulname.MetaMasterName]; n != "" {
		return n
	}
	for _, t := range in.Tags {
		for _, role := range []string{consulname.RoleMaster, consulname.RoleReplica} {
			if n, ok := strings.CutSuffix(t, "-"+role); ok && n != "" {
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
// 127.0.0.9 sorts before 127.0.0.10; an address that does not parse sorts
// by its text.
func addrLess(a, b string) bool {
	ha, pa, erra := addr.Split(a)
	hb, pb, errb := addr.Split(b)
	if erra != nil || errb != nil {
		return a < b
	}
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
