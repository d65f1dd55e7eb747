package agent

import (
	"context"
	"fmt"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// ProxyOptions turns a twemproxy config entry into runner options, without
// the live parts (source, registry); `render` uses it too.
func ProxyOptions(t config.Twemproxy, c *config.Config) twemproxy.Options {
	o := twemproxy.Options{
		Name: t.Name, Node: c.NodeName, ConfigFile: t.ConfigFile, Template: t.Template,
		NutcrackerBin: t.Nutcracker, Service: t.Service, Announce: t.Announce,
		Wait:          twemproxy.Wait{Min: t.Wait.Min.D(), Max: t.Wait.Max.D(), Settle: t.Wait.Settle.D()},
		CheckInterval: c.Timing.ProxyCheck.D(),
		Restart: twemproxy.RestartOptions{
			Mode: t.Restart.Mode, Command: t.Restart.Command, Timeout: t.Restart.Timeout.D(),
		},
	}
	if t.Restart.Mode == config.RestartCommand {
		o.Restart.Command = t.Restart.RestartCommand
	}
	return o
}

func (a *Agent) startProxy(name string, t config.Twemproxy, c *config.Config) (component, error) {
	if a.monitor == nil {
		return component{}, fmt.Errorf("twemproxy %s: no Sentinels configured", name)
	}
	o := ProxyOptions(t, c)
	o.Masters, o.Registry = proxyTruth{a.monitor}, a.registrar
	o.Logger, o.Metrics, o.Journal = a.opts.Logger, a.metrics, a.journal
	r, err := twemproxy.New(o)
	if err != nil {
		return component{}, fmt.Errorf("twemproxy %s: %w", name, err)
	}
	// The runner deregisters its pools and stops its child itself when its
	// context ends, on removal and on shutdown alike; the pre-staging of
	// its rewrites (agent/prestage.go) ends with it.
	mon, log := a.monitor, a.opts.Logger.Named(telemetry.LogTwemproxy).With("proxy", name)
	run := func(ctx context.Context) error {
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		go prestage(sctx, mon, r, log)
		return r.Run(ctx)
	}
	return component{value: r, run: a.runner("twemproxy", name, run)}, nil
}
