package discovery

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulOptions are the settings of the local Consul agent connection. Empty
// fields keep what api.DefaultConfig read from the environment
// (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
// CONSUL_CACERT, ...), so the agent behaves like the Consul CLI.
type ConsulOptions struct {
	Address            string // host:port, or a URL with http://, https:// or unix://
	Scheme             string // http or https
	Token              string // ACL token; never logged
	TokenFile          string // file holding the ACL token, read at start
	CAFile             string
	CertFile           string
	KeyFile            string
	TLSServerName      string
	InsecureSkipVerify bool
	Datacenter         string
}

// NewConsulClient builds a Consul API client from api.DefaultConfig with the
// non-empty options applied on top. It does not contact Consul. Errors never
// contain the token.
func NewConsulClient(o ConsulOptions) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if o.Address != "" {
		cfg.Address = o.Address
	}
	if o.Scheme != "" {
		cfg.Scheme = o.Scheme
	}
	if o.Token != "" {
		cfg.Token = o.Token
	}
	if o.TokenFile != "" {
		// api.NewClient reads it and lets it win over a token from the
		// environment.
		cfg.TokenFile = o.TokenFile
	}
	if o.CAFile != "" {
		cfg.TLSConfig.CAFile = o.CAFile
	}
	if o.CertFile != "" {
		cfg.TLSConfig.CertFile = o.CertFile
	}
	if o.KeyFile != "" {
		cfg.TLSConfig.KeyFile = o.KeyFile
	}
	if o.TLSServerName != "" {
		cfg.TLSConfig.Address = o.TLSServerName
	}
	if o.InsecureSkipVerify {
		cfg.TLSConfig.InsecureSkipVerify = true
	}
	if o.Datacenter != "" {
		cfg.Datacenter = o.Datacenter
	}
	// A request that timed out must not reach Consul later: with the
	// default linger, bytes left in the socket are still sent after close,
	// so a write decided during a partition could land after it heals.
	// Linger 0 makes close a reset that drops them.
	cfg.Transport.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: lingerZero}).DialContext
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return c, nil
}

// lingerZero sets SO_LINGER {on, 0} on a TCP socket.
func lingerZero(network, _ string, rc syscall.RawConn) error {
	if !strings.HasPrefix(network, "tcp") {
		return nil
	}
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	})
	if err != nil {
		return err
	}
	return serr
}

// ConsulSentinels returns a Discover function for MonitorOptions that lists
// the Sentinels registered in Consul as service (usually "redis-sentinel").
//
// It returns every registered instance whatever its health: the majority in
// the truth rule is counted over the known Sentinels, and dropping the
// unhealthy ones would let a lone reachable Sentinel look like a majority.
// A Sentinel leaves the set when its registration goes (graceful stop, or
// DeregisterCriticalServiceAfter).
func ConsulSentinels(client *api.Client, service string) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		q := (&api.QueryOptions{AllowStale: true}).WithContext(ctx)
		entries, meta, err := client.Health().Service(service, "", false, q)
		if err != nil {
			return nil, fmt.Errorf("list %s in consul: %w", service, err)
		}
		// Consul drops what the token may not read without an error: a
		// partial set would silently shrink the majority's electorate.
		if meta != nil && meta.ResultsFilteredByACLs {
			return nil, fmt.Errorf("list %s in consul: %w", service, aclHidError(service))
		}
		seen := make(map[string]bool, len(entries))
		out := make([]string, 0, len(entries))
		for _, e := range entries {
			if e.Service == nil || e.Service.Port == 0 {
				continue
			}
			host := e.Service.Address
			if host == "" && e.Node != nil {
				host = e.Node.Address
			}
			if host == "" {
				continue
			}
			addr := net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
			if !seen[addr] {
				seen[addr] = true
				out = append(out, addr)
			}
		}
		sort.Strings(out)
		return out, nil
	}
}

// aclHidError says that Consul hid instances of service from the ACL token
// (X-Consul-Results-Filtered-By-ACLs): the health API needs service:read on
// the service and node:read on the nodes it runs on.
func aclHidError(service string) error {
	return fmt.Errorf("consul hid instances the ACL token may not read (it needs service:read on %q and node:read)", service)
}
