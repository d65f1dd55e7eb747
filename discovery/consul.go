package discovery

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
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
// DeregisterCriticalServiceAfter). A list from which Consul hid instances
// the ACL token may not read is an error (*consulhealth.FilteredError), never
// a shorter list: it would shrink the electorate of the majority.
func ConsulSentinels(client *api.Client, service string) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		res, err := consulhealth.Service(ctx, client, service, consulhealth.Query{AllowStale: true})
		if err != nil {
			return nil, fmt.Errorf("list sentinels: %w", err)
		}
		out := make([]string, 0, len(res.Instances))
		for _, in := range res.Instances {
			if in.Address != "" && !slices.Contains(out, in.Address) {
				out = append(out, in.Address)
			}
		}
		slices.Sort(out)
		return out, nil
	}
}
