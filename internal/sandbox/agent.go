package sandbox

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"gopkg.in/yaml.v3"
)

// Agent is a running redis-consul-agent.
type Agent struct {
	*Process
	// HTTPAddr is host:port of its status API, metrics and dashboard.
	HTTPAddr string
	// ConfigPath is its config file; rewrite it and send SIGHUP to reload.
	ConfigPath string
}

// URL returns the agent's HTTP URL for path.
func (a *Agent) URL(path string) string { return "http://" + a.HTTPAddr + path }

// WriteConfig replaces the agent's config file (for a SIGHUP reload).
func (a *Agent) WriteConfig(cfg map[string]any) error {
	cfg["http"] = map[string]any{"address": a.HTTPAddr}
	return writeYAML(a.ConfigPath, cfg)
}

// Reload sends SIGHUP.
func (a *Agent) Reload() error { return a.signal(syscall.SIGHUP) }

// StartAgent writes cfg (the agent's YAML as a map; http.address is set
// here, on ip) and starts bin with `agent --config`, ready once /healthz
// answers. bin empty means Options.AgentBin.
func (c *Cluster) StartAgent(bin, name, ip string, cfg map[string]any) (*Agent, error) {
	return c.StartAgentEnv(bin, name, ip, cfg, nil)
}

// StartAgentEnv is StartAgent with env (KEY=value) added to the agent's
// environment, e.g. CONSUL_HTTP_TOKEN.
func (c *Cluster) StartAgentEnv(bin, name, ip string, cfg map[string]any, env []string) (*Agent, error) {
	port, err := c.FreePort(ip)
	if err != nil {
		return nil, err
	}
	return c.StartAgentAt(bin, name, net.JoinHostPort(ip, strconv.Itoa(port)), cfg, env)
}

// StartAgentAt is StartAgentEnv with the status API on addr (host:port, claimed
// by the caller, see ClaimPort) instead of a free port: the demo's dashboard on
// the agent's default 127.0.0.1:8765.
func (c *Cluster) StartAgentAt(bin, name, addr string, cfg map[string]any, env []string) (*Agent, error) {
	if bin == "" {
		bin = c.opts.AgentBin
	}
	if bin == "" {
		return nil, fmt.Errorf("start agent %s: no agent binary (Options.AgentBin)", name)
	}
	ip, port, err := splitAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("start agent %s: http address %q: %w", name, addr, err)
	}
	dir, err := c.ProcessDir(name)
	if err != nil {
		return nil, err
	}
	a := &Agent{HTTPAddr: addr, ConfigPath: filepath.Join(dir, "agent.yml")}
	if err := a.WriteConfig(cfg); err != nil {
		return nil, err
	}
	p, err := c.Start(ProcessSpec{
		Name: name, Argv: []string{bin, "agent", "--config", a.ConfigPath}, Env: env, IP: ip, Ports: []int{port},
		Ready: func(ctx context.Context) error { return HTTPOK(ctx, a.URL("/healthz")) },
	})
	if err != nil {
		return nil, fmt.Errorf("start agent %s: %w", name, err)
	}
	a.Process = p
	return a, nil
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// HTTPOK returns nil once GET url answers 200.
func HTTPOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
