package sandbox

import (
	"net"
	"strconv"
)

// ClaimPort reserves ip:port for the caller if it is free now (TCP, and UDP
// too if udp) and nobody in this process took it before, so FreePort never
// hands it out. It reports whether the port is the caller's. The demo uses it
// for the well-known addresses (Consul's 8500 and 8600, twemproxy's 22121, the
// dashboard's 8765) and falls back to FreePort when one is taken.
func (c *Cluster) ClaimPort(ip string, port int, udp bool) bool {
	alloc.Lock()
	defer alloc.Unlock()
	if alloc.used == nil {
		alloc.used = map[string]bool{}
		alloc.lo, alloc.hi = portRange()
	}
	key := net.JoinHostPort(ip, strconv.Itoa(port))
	if alloc.used[key] || !portFree(ip, port, udp) {
		return false
	}
	alloc.used[key] = true
	return true
}
