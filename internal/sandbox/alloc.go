package sandbox

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// The allocator is process-wide: clusters started one after another or side by
// side in one test binary never share an address, and test binaries running in
// parallel start at random places in 127.0.0.0/8 and check every port is free.
var alloc struct {
	sync.Mutex
	x, y   int // next IP is 127.0.x.y
	used   map[string]bool
	lo, hi int // port range
}

func allocIP() string {
	alloc.Lock()
	defer alloc.Unlock()
	if alloc.x == 0 {
		alloc.x, alloc.y = 1+rand.IntN(254), 2
	}
	if alloc.y > 254 {
		alloc.x, alloc.y = alloc.x%254+1, 2
	}
	ip := fmt.Sprintf("127.0.%d.%d", alloc.x, alloc.y)
	alloc.y++
	return ip
}

func allocPort(ip string) (int, error) {
	alloc.Lock()
	defer alloc.Unlock()
	if alloc.used == nil {
		alloc.used = map[string]bool{}
		alloc.lo, alloc.hi = portRange()
	}
	for range 200 {
		port := alloc.lo + rand.IntN(alloc.hi-alloc.lo)
		key := net.JoinHostPort(ip, strconv.Itoa(port))
		if alloc.used[key] || !portFree(ip, port, true) {
			continue
		}
		alloc.used[key] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port on %s in %d-%d", ip, alloc.lo, alloc.hi)
}

// portRange is the range below the kernel's ephemeral ports (or above them when
// the space below is small), so no outgoing connection holds a port we hand out.
func portRange() (int, int) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if a, err := strconv.Atoi(f[0]); err == nil {
				lo = a
			}
			if a, err := strconv.Atoi(f[1]); err == nil {
				hi = a
			}
		}
	}
	if lo-10000 >= 5000 {
		return 10000, lo
	}
	if 65535-hi >= 5000 {
		return hi + 1, 65536
	}
	return 10000, 65536
}

// portFree reports whether ip:port can be bound for TCP and, if udp, for UDP.
func portFree(ip string, port int, udp bool) bool {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	if udp {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		pc.Close()
	}
	return true
}
