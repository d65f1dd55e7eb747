package discovery

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Role names used in tags, Meta and metrics.
const (
	RoleMaster  = "master"
	RoleReplica = "replica"
	// RoleUnknown is a Redis whose role cannot be advertised: unreachable
	// before its first read, or a master the Sentinel truth disowns. It gets
	// no role tag, so no DNS role query can answer it.
	RoleUnknown = "unknown"
)

// Sources of the Sentinel truth, reported in Master.Source.
const (
	SourceMajority     = "majority"      // a strict majority of the known Sentinels agree
	SourceSwitchMaster = "switch-master" // a confirmed +switch-master the majority has not caught up with yet
	SourceStale        = "stale"         // no majority and no fresh event: the last known address
)

// ServiceID is the Consul service ID of a Redis announced at addr:
// "<prefix>-<host>-<port>", for example redis-10.0.0.5-6379 (DESIGN §5).
// Dots are kept, as the contract shows them and Consul accepts them; any
// character that is not a letter, digit, '.', '_' or '-' (the colons of an
// IPv6 host, say) becomes '-' so the ID is safe in agent API URL paths.
func ServiceID(prefix, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, ""
	}
	id := prefix + "-" + host
	if port != "" {
		id += "-" + port
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, id)
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

// normalizeAddr returns a canonical "host:port" so that addresses written
// differently compare equal: the host lower-cased without a trailing dot,
// IP addresses in canonical form (IPv4-mapped IPv6 unmapped), the port
// without leading zeros. Addresses that do not parse are returned trimmed.
func normalizeAddr(addr string) string {
	addr = strings.TrimSpace(addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	if p, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(p)
	}
	return net.JoinHostPort(host, port)
}

// sameAddr reports whether a and b name the same host:port.
func sameAddr(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	return normalizeAddr(a) == normalizeAddr(b)
}

// splitPort splits addr into host and numeric port for Consul's Address and
// Port fields.
func splitPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return "", 0, fmt.Errorf("address %q: invalid port %q", addr, port)
	}
	if host == "" {
		return "", 0, fmt.Errorf("address %q: missing host", addr)
	}
	return host, p, nil
}

// backoff is a capped exponential backoff with jitter. The zero value is not
// usable; set min and max. Not safe for concurrent use.
type backoff struct {
	min, max time.Duration
	n        int
}

// next returns the delay before the next attempt: min·2ⁿ capped at max,
// with the upper half jittered so that agents do not retry in lockstep.
func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	if d > b.max {
		d = b.max
	}
	if b.n < 32 {
		b.n++
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}

// reset starts over after a success.
func (b *backoff) reset() { b.n = 0 }
