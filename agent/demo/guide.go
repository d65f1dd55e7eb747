package demo

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// CommandPrefix starts every command line of the guide, so a reader (and the
// demo's test, which runs each one) tells commands from prose. A command is
// its words separated by single spaces, none quoted: it means the same typed
// into a shell and split into argv.
const CommandPrefix = "    $ "

// guide writes what runs and how to drive it. Every address in it is one the
// stack listens on, and every command works as printed; the test runs them.
func guide(w io.Writer, st *Stack, consulBin, agentBin string, took time.Duration) {
	dnsHost, dnsPort := splitHostPort(st.Consul.DNSAddr())
	dig := fmt.Sprintf("dig @%s -p %s", dnsHost, dnsPort)
	consul := func(sub string) string {
		if st.Consul.HTTPAddr() == net.JoinHostPort(WellKnownIP, strconv.Itoa(ConsulHTTPPort)) {
			return consulBin + " " + sub
		}
		return consulBin + " " + sub + " -http-addr=" + st.Consul.HTTPAddr()
	}
	status := agentBin + " status"
	if trimURL(st.Dashboard) != net.JoinHostPort(WellKnownIP, strconv.Itoa(DashboardPort)) {
		status += " --http-addr " + trimURL(st.Dashboard)
	}
	m, s := st.Shard.Master, st.Shard.Sentinels[0]
	var b strings.Builder
	cmd := func(format string, a ...any) { fmt.Fprintf(&b, CommandPrefix+format+"\n", a...) }
	fmt.Fprintf(&b, "\nredis-consul-agent demo is running (started in %.1fs). Everything listens on loopback.\n\n", took.Seconds())
	fmt.Fprintf(&b, "  Dashboard       %s\n", st.Dashboard)
	fmt.Fprintf(&b, "  Consul UI       %s/ui/\n", st.Consul.HTTPURL())
	fmt.Fprintf(&b, "  Consul DNS      %s\n", st.Consul.DNSAddr())
	fmt.Fprintf(&b, "  twemproxy       %s (pool \"main\" in front of %s)\n", st.Proxy, st.Shard.Name)
	for _, f := range st.Fallbacks {
		fmt.Fprintf(&b, "  note: %s\n", f)
	}
	b.WriteString("\n  Ask Consul DNS which Redis is the master, which are replicas, where twemproxy is:\n")
	cmd("%s master.redis.service.consul +short", dig)
	cmd("%s replica.redis.service.consul +short", dig)
	cmd("%s %s-master.redis.service.consul +short", dig, st.Shard.Name)
	cmd("%s twemproxy.service.consul SRV +short", dig)
	b.WriteString("\n  The Consul CLI and the agents' own view:\n")
	cmd("%s", consul("members"))
	cmd("%s", consul("catalog services -tags"))
	cmd("%s", status)
	b.WriteString("\n  Write through twemproxy:\n")
	cmd("%s set hello world", redisCLI(st.Proxy))
	b.WriteString("\n  Trigger a failover, then watch the dashboard and DNS:\n")
	cmd("%s sentinel failover %s", redisCLI(s.Addr()), st.Shard.Name)
	fmt.Fprintf(&b, "  or kill the master (redis-server %s):\n", m.Addr())
	cmd("kill -9 %d", m.Pid())
	b.WriteString("\nPress Ctrl-C to stop and clean up.\n")
	// A reader that went away (a pipe whose tee died) must not stop the demo.
	_, _ = io.WriteString(w, b.String())
}

// redisCLI is the redis-cli invocation for addr, as short as it can be.
func redisCLI(addr string) string {
	h, p := splitHostPort(addr)
	if h == WellKnownIP {
		return "redis-cli -p " + p
	}
	return "redis-cli -h " + h + " -p " + p
}

// commandPath is how a person in the current directory runs bin: ./relative
// when it lies below, else the absolute path.
func commandPath(bin string) string {
	wd, err := os.Getwd()
	if err != nil {
		return bin
	}
	rel, err := filepath.Rel(wd, bin)
	if err != nil || strings.HasPrefix(rel, "..") {
		return bin
	}
	return "./" + rel
}

// consulCommand is the consul binary the stack runs, for the guide.
func consulCommand() string {
	p, err := sandbox.Binary("consul")
	if err != nil {
		return "consul"
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

func splitHostPort(a string) (string, string) {
	h, p, _ := net.SplitHostPort(a)
	return h, p
}

func trimURL(u string) string {
	return strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
}
