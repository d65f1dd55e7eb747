package demo

import (
	"fmt"
	"net"
	"strconv"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The well-known addresses the demo takes when they are free, so the commands
// of Consul's, Redis' and the agent's own docs work unchanged: `consul
// members`, `dig @127.0.0.1 -p 8600 ...`, `redis-cli -p 22121`, `status`.
const (
	WellKnownIP    = "127.0.0.1"
	ConsulHTTPPort = 8500
	ConsulDNSPort  = 8600
	DashboardPort  = 8765 // the agent's default http.address
	ProxyPort      = 22121
)

// addrs are the listen addresses the demo chose, and a note for each
// well-known one it could not have.
type addrs struct {
	consulHTTP, consulDNS int    // ports on WellKnownIP
	dashboard             string // host:port
	proxy                 string // host:port
	fallbacks             []string
}

// chooseAddrs claims the well-known ports that are free; for a taken one it
// picks a free port (Consul stays on 127.0.0.1, the dashboard and the proxy
// move to their own host, as every sandbox process does) and records why.
func chooseAddrs(c *sandbox.Cluster, agentIP, proxyIP string) (addrs, error) {
	var a addrs
	var err error
	pick := func(what, ip string, want int, udp bool, fallbackIP string) (string, int, error) {
		if c.ClaimPort(ip, want, udp) {
			return ip, want, nil
		}
		port, err := c.FreePort(fallbackIP)
		if err != nil {
			return "", 0, fmt.Errorf("choose a port for %s: %w", what, err)
		}
		a.fallbacks = append(a.fallbacks, fmt.Sprintf("%s: %s is taken, using %s", what,
			net.JoinHostPort(ip, strconv.Itoa(want)), net.JoinHostPort(fallbackIP, strconv.Itoa(port))))
		return fallbackIP, port, nil
	}
	if _, a.consulHTTP, err = pick("Consul HTTP", WellKnownIP, ConsulHTTPPort, false, WellKnownIP); err != nil {
		return a, err
	}
	if _, a.consulDNS, err = pick("Consul DNS", WellKnownIP, ConsulDNSPort, true, WellKnownIP); err != nil {
		return a, err
	}
	host, port, err := pick("the dashboard", WellKnownIP, DashboardPort, false, agentIP)
	if err != nil {
		return a, err
	}
	a.dashboard = net.JoinHostPort(host, strconv.Itoa(port))
	if host, port, err = pick("twemproxy", WellKnownIP, ProxyPort, false, proxyIP); err != nil {
		return a, err
	}
	a.proxy = net.JoinHostPort(host, strconv.Itoa(port))
	return a, nil
}
