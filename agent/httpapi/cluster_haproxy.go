package httpapi

import (
	"sort"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// AddFrontends puts the HAProxy frontends Consul's health API returns
// (every instance, as consulhealth reads them) among c's proxies, beside
// the twemproxy pools, with kind haproxy. Each frontend's servers come
// from its Meta (consulname.ParseServers, written by the driver of the
// agent beside that HAProxy) and are compared with truth, the Sentinel
// truth this agent holds, so that any agent's view says whether a frontend
// follows Sentinel, not only the agent that drives it. It is pure.
func AddFrontends(c *status.Cluster, frontends []consulhealth.Instance, truth []status.Master) {
	truthBy := map[string]string{}
	for _, m := range truth {
		truthBy[m.Name] = m.Addr
	}
	for _, e := range frontends {
		p := status.ClusterProxy{ClusterNode: clusterNode(e), Kind: status.ProxyHAProxy, Proxy: e.Meta[consulname.MetaProxy]}
		p.Pool = e.Meta[consulname.MetaPool]
		if p.Pool == "" && len(e.Tags) > 0 {
			p.Pool = e.Tags[0]
		}
		servers, _ := consulname.ParseServers(e.Meta)
		follows, judged := true, false
		for _, s := range servers {
			cs := status.ClusterProxyServer{Name: s.Name, MasterName: s.MasterName, Addr: s.Addr, Matches: true}
			want, known := truthBy[s.MasterName]
			switch {
			case s.Addr == "":
				cs.Matches, cs.Want = false, want
			case known && want != "" && !addr.Same(s.Addr, want):
				cs.Matches, cs.Want = false, want
			}
			if known && want != "" || s.Addr == "" {
				judged = true
				follows = follows && cs.Matches
			}
			p.Servers = append(p.Servers, cs)
		}
		if judged {
			p.Follows = &follows
		}
		c.Proxies = append(c.Proxies, p)
	}
	sortProxies(c.Proxies)
}

// sortProxies orders the twemproxy pools first, then the HAProxy
// frontends, each by name, node and address.
func sortProxies(ps []status.ClusterProxy) {
	rank := func(kind string) int {
		if kind == status.ProxyHAProxy {
			return 1
		}
		return 0
	}
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if ra, rb := rank(a.Kind), rank(b.Kind); ra != rb {
			return ra < rb
		}
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return addrLess(a.Addr, b.Addr)
	})
}
