package agent

import (
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/discovery"
)

// proxyTruth adapts the discovery Monitor to what a proxy driver follows:
// the same truth as Consul gets, as twemproxy.Master or haproxy.Master (the
// same three fields; if one of them grows a field, this stops compiling
// rather than leaving it zero). A stale truth (no majority, no fresh event)
// is passed on marked Stale: the drivers do not act on it, but twemproxy
// keeps the name in its templates and its pool checks warn. A name with no
// address at all is left out.
type proxyTruth[M ~struct {
	Addr  string
	Since time.Time
	Stale bool
}] struct{ m *discovery.Monitor }

func (s proxyTruth[M]) Masters() map[string]M {
	out := map[string]M{}
	for name, m := range s.m.Masters() {
		if m.Addr != "" {
			out[name] = M{Addr: m.Addr, Since: m.Since, Stale: !m.Known()}
		}
	}
	return out
}

func (s proxyTruth[M]) Subscribe() (<-chan struct{}, func()) { return s.m.Subscribe() }
