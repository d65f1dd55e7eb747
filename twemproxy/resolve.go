package twemproxy

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// Resolver looks up the addresses of a host name; *net.Resolver is one,
// tests pass a fake.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// nodeNames decides whether two server addresses name the same node when
// one is an IP and the other a host name: Sentinel with announce-hostnames
// reports "r1.example:6379" for the node an operator's file lists as
// "10.0.0.5:6379". Rewriting that line would restart nutcracker, and cut
// every client connection, for nothing.
//
// Only a positive lookup makes two addresses the same: a name that does not
// resolve in time is different, so the file follows the truth's form (one
// needless restart at worst, never a server left on the wrong node). Two
// different host names are not looked up at all: that would put DNS on the
// path of every failover between named nodes. Results, failures included,
// are kept for ttl so the health check does not query DNS every second.
type nodeNames struct {
	resolver Resolver
	timeout  time.Duration
	ttl      time.Duration

	mu    sync.Mutex
	cache map[string]lookupResult
}

type lookupResult struct {
	ips []netip.Addr // nil when the lookup failed
	at  time.Time
}

func newNodeNames(r Resolver, timeout, ttl time.Duration) *nodeNames {
	return &nodeNames{resolver: r, timeout: timeout, ttl: ttl, cache: map[string]lookupResult{}}
}

// same reports whether a and b (host:port) name the same node: equal as
// written (addr.Same), or the same port on an IP that the other's host name
// resolves to. A name with several addresses (IPv4 and IPv6, say) names the
// node of each.
func (n *nodeNames) same(ctx context.Context, a, b string) bool {
	if addr.Same(a, b) {
		return true
	}
	ha, pa, errA := addr.Split(addr.Normalize(a))
	hb, pb, errB := addr.Split(addr.Normalize(b))
	if errA != nil || errB != nil || pa != pb {
		return false
	}
	ipA, errA := netip.ParseAddr(ha)
	ipB, errB := netip.ParseAddr(hb)
	var name string
	var ip netip.Addr
	switch {
	case errA == nil && errB != nil:
		name, ip = hb, ipA.Unmap()
	case errA != nil && errB == nil:
		name, ip = ha, ipB.Unmap()
	default:
		return false // two IPs (they differ) or two names (see above)
	}
	return slices.Contains(n.lookup(ctx, name), ip)
}

// lookup returns the addresses of name, from the cache while it is fresh.
func (n *nodeNames) lookup(ctx context.Context, name string) []netip.Addr {
	n.mu.Lock()
	c, ok := n.cache[name]
	n.mu.Unlock()
	if ok && time.Since(c.at) < n.ttl {
		return c.ips
	}
	lctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	hosts, err := n.resolver.LookupHost(lctx, name)
	var ips []netip.Addr
	if err == nil {
		for _, h := range hosts {
			if ip, err := netip.ParseAddr(h); err == nil {
				ips = append(ips, ip.Unmap())
			}
		}
	}
	n.mu.Lock()
	if len(n.cache) > 1024 {
		clear(n.cache) // names come from the truth and the file: few
	}
	n.cache[name] = lookupResult{ips: ips, at: time.Now()}
	n.mu.Unlock()
	return ips
}

// defaultResolver is the system's, as nutcracker resolves its servers.
var defaultResolver Resolver = net.DefaultResolver
