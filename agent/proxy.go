package agent

import (
	"context"
	"fmt"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

func (a *Agent) startProxy(name string, t config.Twemproxy, c *config.Config) (component, error) {
	return component{}, fmt.Errorf("twemproxy %s: not wired yet", name)
}

func (a *Agent) proxyStatus() []status.Proxy { return nil }

var _ = context.Background
