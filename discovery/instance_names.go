package discovery

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// nameResolver builds the Names of a decision: it resolves the hostnames
// among the addresses to compare, each lookup bounded by timeout and each
// answer (or failure) kept for ttl, so that a tick costs no DNS query and a
// resolver that hangs costs one timeout per ttl, not one per tick. Only the
// Run loop of one Instance uses it.
type nameResolver struct {
	lookup  func(ctx context.Context, host string) ([]string, error)
	timeout time.Duration
	ttl     time.Duration
	log     hclog.Logger
	cache   map[string]resolvedHost // by lower-case host
}

type resolvedHost struct {
	ips   []string
	until time.Time
}

// maxResolvedHosts bounds the cache: the truths and masters one Redis sees
// are a handful of nodes; past this the cache starts over.
const maxResolvedHosts = 64

func newNameResolver(timeout, ttl time.Duration, log hclog.Logger) *nameResolver {
	return &nameResolver{lookup: net.DefaultResolver.LookupHost, timeout: timeout, ttl: ttl, log: log, cache: map[string]resolvedHost{}}
}

// names returns the Names of a node known as self, with every hostname in
// self and addrs resolved. A name that does not resolve stands for itself
// only: the comparison then falls back to the text, which can fail to
// recognise a node but never mistakes one node for another.
func (r *nameResolver) names(ctx context.Context, self []string, addrs ...string) Names {
	n := Names{Self: self}
	for _, a := range append(append([]string(nil), self...), addrs...) {
		host, port, err := addr.Split(a)
		if err != nil {
			continue
		}
		if _, err := netip.ParseAddr(host); err == nil {
			continue // an IP stands for itself
		}
		key := addr.Normalize(a)
		if _, done := n.Resolved[key]; done {
			continue
		}
		var forms []string
		for _, ip := range r.host(ctx, host) {
			forms = append(forms, net.JoinHostPort(ip, strconv.Itoa(port)))
		}
		if n.Resolved == nil {
			n.Resolved = map[string][]string{}
		}
		n.Resolved[key] = forms
	}
	return n
}

// host returns the IPs of host, from the cache or one bounded lookup.
func (r *nameResolver) host(ctx context.Context, host string) []string {
	now := time.Now()
	key := strings.TrimSuffix(strings.ToLower(host), ".")
	if c, ok := r.cache[key]; ok && now.Before(c.until) {
		return c.ips
	}
	lctx, cancel := context.WithTimeout(ctx, r.timeout)
	ips, err := r.lookup(lctx, host)
	cancel()
	if err != nil {
		r.log.Debug("cannot resolve a node's hostname; comparing its address as written", "host", host, "error", err)
		ips = nil
	}
	if len(r.cache) >= maxResolvedHosts {
		clear(r.cache)
	}
	r.cache[key] = resolvedHost{ips: ips, until: now.Add(r.ttl)}
	return ips
}
