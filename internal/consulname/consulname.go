// Package consulname is the Consul vocabulary of the agent, shared by the
// code that writes registrations (discovery, twemproxy, haproxy, agent) and
// the code that reads them back (the cluster view, the dashboard, the
// tests): service names, IDs, tags, Meta keys and role words. It is the
// Consul contract of docs/ARCHITECTURE.md in code; change it there too.
package consulname

import (
	"net"
	"strconv"
	"strings"
)

// Default service names.
const (
	Redis     = "redis"
	Sentinel  = "redis-sentinel"
	Twemproxy = "twemproxy"
	HAProxy   = "haproxy"
	// Agent is the service of the agents themselves: the heartbeat whose TTL
	// every other check of an agent aliases, and how agents find each other.
	Agent = "redis-consul-agent"
)

// Role words, used in tags, Meta and metrics.
const (
	RoleMaster  = "master"
	RoleReplica = "replica"
	// RoleUnknown is a Redis whose role cannot be advertised: unreachable
	// before its first read, or a master the Sentinel truth disowns. It gets
	// no role tag, so no DNS role query can answer it.
	RoleUnknown = "unknown"
)

// Meta keys. Meta carries slow-changing facts only: a value that changes
// often (offsets, lag) would be a Raft write each time.
const (
	MetaRole         = "role"          // a Redis: master, replica or unknown
	MetaMasterName   = "master_name"   // a Redis: its Sentinel master name
	MetaMasterAddr   = "master_addr"   // a replica: the master it replicates from
	MetaRedisVersion = "redis_version" // a Redis
	MetaProxy        = "proxy"         // a pool or frontend: the proxy's name in the config
	MetaPool         = "pool"          // a twemproxy pool or HAProxy frontend
	MetaVersion      = "version"       // an agent: its build
	MetaHTTP         = "http"          // an agent: its status API address
	// MetaServers is an HAProxy frontend's servers as FormatServers writes
	// them: which backend/servers it covers, the master name each follows
	// and where HAProxy points it. A value longer than Consul's 512 bytes
	// continues under MetaServers+"_1", "_2"…; ParseServers reads them all.
	MetaServers = "servers"
)

// metaValueMax is Consul's limit on one Meta value.
const metaValueMax = 512

// ProxyServer is one HAProxy server as a frontend's Meta carries it.
type ProxyServer struct {
	Name       string // backend/server
	MasterName string
	Addr       string // where HAProxy points it; empty when HAProxy lacks it
}

// FormatServers is the Meta of a frontend's servers: entries
// "backend/server=master_name@host:port" joined by ",", split over
// MetaServers, MetaServers_1… so that no value passes Consul's limit.
// Names with "=", "@" or "," would not read back, and the config rejects
// them nowhere, so they are replaced by "_".
func FormatServers(servers []ProxyServer) map[string]string {
	clean := strings.NewReplacer("=", "_", "@", "_", ",", "_").Replace
	out := map[string]string{}
	key, cur, n := MetaServers, "", 0
	for _, s := range servers {
		e := clean(s.Name) + "=" + clean(s.MasterName) + "@" + clean(s.Addr)
		if cur != "" && len(cur)+1+len(e) > metaValueMax {
			out[key] = cur
			n++
			key, cur = MetaServers+"_"+strconv.Itoa(n), ""
		}
		if cur != "" {
			cur += ","
		}
		cur += e
	}
	if cur != "" {
		out[key] = cur
	}
	return out
}

// ParseServers reads what FormatServers wrote; an entry that does not
// parse is skipped and counted in bad, so a reader can say so.
func ParseServers(meta map[string]string) (servers []ProxyServer, bad int) {
	for i := 0; ; i++ {
		key := MetaServers
		if i > 0 {
			key += "_" + strconv.Itoa(i)
		}
		v, ok := meta[key]
		if !ok {
			return servers, bad
		}
		for _, e := range strings.Split(v, ",") {
			name, rest, ok1 := strings.Cut(e, "=")
			master, a, ok2 := strings.Cut(rest, "@")
			if !ok1 || !ok2 || name == "" || master == "" {
				bad++
				continue
			}
			servers = append(servers, ProxyServer{Name: name, MasterName: master, Addr: a})
		}
	}
}

// ServiceID is "<prefix>-<host>-<port>" of a service announced at addr, for
// example redis-10.0.0.5-6379. Dots are kept, as the contract shows them and
// Consul accepts them; any character that is not a letter, digit, '.', '_'
// or '-' (the colons of an IPv6 host, say) becomes '-' so the ID is safe in
// agent API URL paths.
func ServiceID(prefix, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, ""
	}
	id := prefix + "-" + host
	if port != "" {
		id += "-" + port
	}
	return safe(id)
}

// PoolID is the service ID of a proxy's pool or frontend: <prefix>-<node>-<pool>,
// e.g. twemproxy-cache-1-main.
func PoolID(prefix, node, pool string) string {
	return prefix + "-" + safe(node) + "-" + safe(pool)
}

func safe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, s)
}

// DNSLabel turns a Sentinel master name into something usable as a Consul
// tag that DNS can query (<label>-master.redis.service.consul): lower case,
// [a-z0-9-] only, every other character replaced by '-', no leading or
// trailing '-', at most 55 bytes so that "<label>-replica" still fits the
// 63-byte DNS label limit. Distinct names may map to one label
// ("a_b" and "a.b"); keep master names DNS-friendly to avoid that.
func DNSLabel(name string) string {
	b := []byte(strings.ToLower(name))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	s := strings.Trim(string(b), "-")
	if len(s) > 55 {
		s = strings.TrimRight(s[:55], "-")
	}
	if s == "" {
		s = "x"
	}
	return s
}

// ShardTag is the per-shard role tag, "<label>-master" or "<label>-replica".
func ShardTag(masterName, role string) string { return DNSLabel(masterName) + "-" + role }

// RoleTags are the tags of a Redis with role in the shard masterName: the
// role and the shard's role tag; none for RoleUnknown, so that no DNS role
// query answers it.
func RoleTags(role, masterName string) []string {
	if role != RoleMaster && role != RoleReplica {
		return nil
	}
	return []string{role, ShardTag(masterName, role)}
}
