package sandbox

import (
	"net"
	"strconv"
)

// ClaimPort reserves ip:port for the cluster if it is free now (TCP, and UDP
// too if udp) and nobody in this process holds it, so FreePort never hands it
// out; Close releases it for the next cluster. It reports whether the port is
// the cluster's. The demo uses it
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
	c.onClose(func() {
		alloc.Lock()
		defer alloc.Unlock()
		delete(alloc.used, key)
	})
	return true
}
