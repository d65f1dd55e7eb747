package agent

import (
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/internal/proxytruth"
)

// proxyTruth adapts the discovery Monitor to what both proxy drivers follow:
// the same truth as Consul gets. A stale truth (no majority, no fresh event)
// is passed on marked Stale: the drivers do not act on it, but twemproxy
// keeps the name in its templates and its pool checks warn. A name with no
// address at all is left out.
type proxyTruth struct{ m *discovery.Monitor }

var _ proxytruth.Source = proxyTruth{}

func (s proxyTruth) Masters() map[string]proxytruth.Master {
	out := map[string]proxytruth.Master{}
	for name, m := range s.m.Masters() {
		if m.Addr != "" {
			out[name] = proxytruth.Master{Addr: m.Addr, Since: m.Since, Stale: !m.Known()}
		}
	}
	return out
}

func (s proxyTruth) Subscribe() (<-chan struct{}, func()) { return s.m.Subscribe() }
