package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// HAProxy is one local HAProxy the agent drives through its runtime API.
type HAProxy struct {
	Name string `yaml:"name"`
	// RuntimeAPI is a unix socket path or host:port of a `stats socket ...
	// level admin` (or `expose-fd listeners` too).
	RuntimeAPI string          `yaml:"runtime_api"`
	Servers    []HAProxyServer `yaml:"servers"`
	// Frontends are registered in Consul; none registers one service named
	// after the entry.
	Frontends []HAProxyFrontend `yaml:"frontends"`
	Service   string            `yaml:"service"`
	// Timeout bounds one runtime API command (default 1s).
	Timeout Duration `yaml:"timeout"`
	// Reconcile is the slow tick that reads `show servers state` and puts
	// HAProxy right (default 5s).
	Reconcile Duration `yaml:"reconcile"`
}

// HAProxyServer is one backend/server pair that follows a shard's master.
type HAProxyServer struct {
	Backend    string `yaml:"backend"`
	Server     string `yaml:"server"`
	MasterName string `yaml:"master_name"`
}

// HAProxyFrontend is one HAProxy frontend registered in Consul.
type HAProxyFrontend struct {
	Name string `yaml:"name"`
	// Address is the host:port clients connect to; empty registers none.
	Address string `yaml:"address"`
	// Backends limits the frontend's check to these backends' servers
	// (default: every server of the entry).
	Backends []string `yaml:"backends"`
}

// haproxyNameRe is what HAProxy accepts in a proxy or server name; it also
// keeps a name from changing the meaning of a runtime API command.
var haproxyNameRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)

// finishHAProxy fills the defaults of the haproxy entries and checks them.
// Whether the backends and servers exist only the running HAProxy knows:
// `validate` asks it (agent.CheckHAProxy), and the driver reports unknown
// names at run time.
func (c *Config) finishHAProxy(bad func(key, format string, args ...any)) {
	names := map[string]bool{}
	for i := range c.HAProxy {
		h := &c.HAProxy[i]
		key := fmt.Sprintf("haproxy[%d]", i)
		switch {
		case h.Name == "":
			bad(key+".name", "missing")
		case !labelRe.MatchString(h.Name):
			bad(key+".name", "%q: use letters, digits, '-', '_' or '.'", h.Name)
		case names[h.Name]:
			bad(key+".name", "%q used twice", h.Name)
		}
		names[h.Name] = true
		switch {
		case h.RuntimeAPI == "":
			bad(key+".runtime_api", "missing: a unix socket path or host:port of a `stats socket ... level admin`")
		case strings.Contains(h.RuntimeAPI, "/"):
			if !strings.HasPrefix(h.RuntimeAPI, "/") {
				bad(key+".runtime_api", "%q: a socket path must be absolute", h.RuntimeAPI)
			}
		default:
			if err := checkHostPort(h.RuntimeAPI); err != nil {
				bad(key+".runtime_api", "%q: %v (or give an absolute unix socket path)", h.RuntimeAPI, err)
			}
		}
		if h.Service == "" {
			h.Service = "haproxy"
		} else if !serviceRe.MatchString(h.Service) {
			bad(key+".service", "%q: use lowercase letters, digits and '-'", h.Service)
		}
		if h.Timeout == 0 {
			h.Timeout = Duration(time.Second)
		}
		if h.Reconcile == 0 {
			h.Reconcile = Duration(5 * time.Second)
		}
		if h.Timeout < 0 {
			bad(key+".timeout", "%s: must be positive", h.Timeout.D())
		}
		if h.Reconcile < 0 {
			bad(key+".reconcile", "%s: must be positive", h.Reconcile.D())
		}
		backends := h.checkServers(key, bad)
		h.checkFrontends(key, backends, bad)
	}
}

// checkServers checks the servers of an entry and returns their backends.
func (h *HAProxy) checkServers(key string, bad func(key, format string, args ...any)) []string {
	if len(h.Servers) == 0 {
		bad(key+".servers", "missing: list the backend/server pairs that follow a master")
	}
	var backends []string
	seen := map[string]bool{}
	for j, s := range h.Servers {
		sk := fmt.Sprintf("%s.servers[%d]", key, j)
		for k, v := range map[string]string{"backend": s.Backend, "server": s.Server} {
			if v == "" {
				bad(sk+"."+k, "missing")
			} else if !haproxyNameRe.MatchString(v) {
				bad(sk+"."+k, "%q: HAProxy names use letters, digits, '-', '_', '.' and ':'", v)
			}
		}
		if s.MasterName == "" {
			bad(sk+".master_name", "missing: the Sentinel master name this server follows")
		}
		if name := s.Backend + "/" + s.Server; seen[name] {
			bad(sk, "%s listed twice", name)
		} else {
			seen[name] = true
		}
		if !slices.Contains(backends, s.Backend) {
			backends = append(backends, s.Backend)
		}
	}
	return backends
}

func (h *HAProxy) checkFrontends(key string, backends []string, bad func(key, format string, args ...any)) {
	seen := map[string]bool{}
	for j, f := range h.Frontends {
		fk := fmt.Sprintf("%s.frontends[%d]", key, j)
		switch {
		case f.Name == "":
			bad(fk+".name", "missing")
		case !labelRe.MatchString(f.Name):
			bad(fk+".name", "%q: use letters, digits, '-', '_' or '.'", f.Name)
		case seen[f.Name]:
			bad(fk+".name", "%q used twice", f.Name)
		}
		seen[f.Name] = true
		if f.Address != "" {
			if err := checkHostPort(f.Address); err != nil {
				bad(fk+".address", "%q: %v", f.Address, err)
			}
		}
		for k, b := range f.Backends {
			if !slices.Contains(backends, b) {
				bad(fmt.Sprintf("%s.backends[%d]", fk, k), "%q: no server of this entry is in that backend (servers use %s)", b, strings.Join(backends, ", "))
			}
		}
	}
}

// HAProxyServices lists the service names HAProxy frontends use.
func (c *Config) HAProxyServices() []string {
	return uniq("haproxy", func(yield func(string) bool) {
		for _, h := range c.HAProxy {
			if !yield(h.Service) {
				return
			}
		}
	})
}
