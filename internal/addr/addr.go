// Package addr is the one place where the agent parses, normalises and
// compares Redis node addresses ("host:port"), and turns them into
// twemproxy's form. The role decision, the twemproxy and HAProxy drivers and
// the cluster view all compare nodes with Same, so they cannot drift.
package addr

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Normalize returns a canonical "host:port" so that addresses written
// differently compare equal: the host lower-cased without a trailing dot,
// IP addresses in canonical form (IPv4-mapped IPv6 unmapped), IPv6 hosts with
// or without brackets (twemproxy writes "::1:6379"), the port without leading
// zeros. An address that does not parse is returned trimmed.
func Normalize(a string) string {
	a = strings.TrimSpace(a)
	host, port, err := Split(a)
	if err != nil {
		return a
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// Same reports whether a and b are the same host:port as written; an empty
// address is never the same as anything. It does not resolve names: see
// Resolver for nodes that Sentinel reports by hostname.
func Same(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	return Normalize(a) == Normalize(b)
}

// Split splits "host:port" into a non-empty host and a port in 1-65535. The
// host may be an IPv6 address in brackets or, as twemproxy writes it, without
// (the port is what follows the last colon).
func Split(a string) (host string, port int, err error) {
	if h, p, err := net.SplitHostPort(a); err == nil {
		host, port, err = h, 0, nil
		port, err = parsePort(p)
		if err != nil {
			return "", 0, fmt.Errorf("address %q: %w", a, err)
		}
		if host == "" {
			return "", 0, fmt.Errorf("address %q: missing host", a)
		}
		return host, port, nil
	}
	i := strings.LastIndexByte(a, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("address %q: not host:port", a)
	}
	host = a[:i]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" || strings.ContainsAny(host, "[]") {
		return "", 0, fmt.Errorf("address %q: bad host", a)
	}
	if port, err = parsePort(a[i+1:]); err != nil {
		return "", 0, fmt.Errorf("address %q: %w", a, err)
	}
	return host, port, nil
}

func parsePort(p string) (int, error) {
	// Leading zeros do not count towards the five digits: "026379" is 26379.
	digits := strings.TrimLeft(p, "0")
	if p == "" || len(digits) > 5 || strings.Trim(p, "0123456789") != "" {
		return 0, fmt.Errorf("invalid port %q", p)
	}
	n, _ := strconv.Atoi("0" + digits)
	if n <= 0 || n > 65535 {
		return 0, fmt.Errorf("port %q is not in 1-65535", p)
	}
	return n, nil
}

// Join validates a host and a port token (as Sentinel sends them in an
// event) and joins them in net.JoinHostPort's form.
func Join(host, port string) (string, error) {
	if host == "" || strings.ContainsAny(host, "[]@") {
		return "", fmt.Errorf("invalid host %q", host)
	}
	p, err := parsePort(port)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// Twemproxy turns a "host:port" into twemproxy's form: IPv6 without
// brackets, since nutcracker resolves the host part verbatim. It refuses
// characters that could change the meaning of the YAML around it.
func Twemproxy(a string) (string, error) {
	host, port, err := Split(a)
	if err != nil {
		return "", err
	}
	for _, r := range host {
		ok := r == '.' || r == ':' || r == '-' || r == '_' || r == '%' ||
			(r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return "", fmt.Errorf("address %q: host has %q, not allowed in a twemproxy server", a, r)
		}
	}
	return host + ":" + strconv.Itoa(port), nil
}
