package discovery

import "github.com/seed42ef8afe/redis-consul-agent/internal/addr"

// Names is what the role logic knows about the addresses it compares, so
// that it compares nodes rather than spellings. Sentinel reports a node the
// way it learnt it: the IP it was told in `sentinel monitor`, or, with
// `sentinel resolve-hostnames yes` and `announce-hostnames yes`, the
// hostname the node announces (replica-announce-ip). The agent's config may
// give the same node as an IP ("rca-r1.test:6379" and "127.0.77.11:6379").
//
// Two addresses name one node when they are the same host:port (addr.Same)
// or when one of them is a hostname that resolved to the other's IP, with
// the same port. The resolution is done before the decision (see
// nameResolver), so Names is a plain value and the rules stay pure.
type Names struct {
	// Self are the addresses of this node: the announce address and the
	// address the agent connects to.
	Self []string
	// Resolved maps an address with a hostname (as addr.Normalize writes
	// it) to the "ip:port" forms its host resolved to. An address missing
	// here stands for itself only.
	Resolved map[string][]string
}

// forms returns a and every address it resolved to.
func (n Names) forms(a string) []string {
	return append([]string{a}, n.Resolved[addr.Normalize(a)]...)
}

// Same reports whether a and b name one node; an empty address names none.
func (n Names) Same(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	fb := n.forms(b)
	for _, x := range n.forms(a) {
		for _, y := range fb {
			if addr.Same(x, y) {
				return true
			}
		}
	}
	return false
}

// IsSelf reports whether a names this node.
func (n Names) IsSelf(a string) bool {
	for _, s := range n.Self {
		if n.Same(a, s) {
			return true
		}
	}
	return false
}
