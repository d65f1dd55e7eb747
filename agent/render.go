package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// RenderedProxy is what `render` prints for one twemproxy entry.
type RenderedProxy struct {
	Name       string
	ConfigFile string
	twemproxy.Rendered
}

// Render asks the Sentinels for the truth once and returns the twemproxy
// configs the agent would write now. It writes nothing and registers
// nothing: a dry run an operator can diff against the file.
func Render(ctx context.Context, c *config.Config, logger hclog.Logger) ([]RenderedProxy, error) {
	if len(c.Twemproxy) == 0 {
		return nil, errors.New("render: the config lists no twemproxy")
	}
	a, err := New(Options{Config: c, Logger: logger})
	if err != nil {
		return nil, err
	}
	if a.monitor == nil {
		return nil, errors.New("render: no Sentinels configured")
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go a.monitor.Run(mctx)
	if err := waitTruth(ctx, a.monitor, 5*time.Second); err != nil {
		return nil, err
	}
	var out []RenderedProxy
	for _, t := range c.Twemproxy {
		o := ProxyOptions(t, c)
		o.Masters = proxyTruth{a.monitor}
		o.Logger, o.Metrics, o.Journal = logger, telemetry.Discard(), telemetry.NewJournal(10)
		r, err := twemproxy.New(o)
		if err != nil {
			return nil, fmt.Errorf("twemproxy %s: %w", t.Name, err)
		}
		res, err := r.Render()
		if err != nil {
			return nil, fmt.Errorf("twemproxy %s: %w", t.Name, err)
		}
		out = append(out, RenderedProxy{Name: t.Name, ConfigFile: t.ConfigFile, Rendered: res})
	}
	return out, nil
}

// waitTruth waits until every master name the Sentinels monitor has a known
// truth, so that a dry run does not print a half-learnt state.
func waitTruth(ctx context.Context, m *discovery.Monitor, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	ch, unsub := m.Subscribe()
	defer unsub()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		masters := m.Masters()
		known := len(masters) > 0
		for _, mm := range masters {
			known = known && mm.Known()
		}
		if known {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("render: no Sentinel truth within %s (are the Sentinels reachable?)", limit)
		case <-ch:
		case <-tick.C:
		}
	}
}
