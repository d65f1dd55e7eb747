package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulOptions configure a single Consul server.
type ConsulOptions struct {
	Name string // node name, default consul-N
	// ACL turns ACLs on with default_policy deny and a random management token
	// (Consul.Token), which is also the agent's and the DNS token.
	ACL      bool
	LogLevel string         // default info
	Extra    map[string]any // top-level config keys, merged over the generated ones
	// HTTPS serves the HTTP API over TLS only, on HTTPPort (Consul's https
	// port; the plain http port is off), with a certificate for the server's
	// IP and server.dc1.consul from a new CA (Consul.CA). Client and
	// ClientWithToken trust that CA.
	HTTPS bool
	// IP is the "host" Consul binds, serves and advertises on; empty means a
	// new one (NewIP). The demo passes 127.0.0.1 so the CLI and dig find it
	// where Consul's own docs look.
	IP string
	// HTTPPort and DNSPort are used as given when set (claim them first with
	// ClaimPort); 0 means a free port.
	HTTPPort, DNSPort int
}

// Consul is a running single-node Consul server: server, client and DNS on
// one loopback host.
type Consul struct {
	*Process
	HTTPPort, DNSPort, SerfLANPort, SerfWANPort, ServerPort int
	// CA signed the HTTPS certificate (nil without ConsulOptions.HTTPS).
	CA *CA

	ip      string
	node    string
	token   string
	dataDir string
}

// StartConsul starts a Consul server and waits until it has elected itself
// leader, its node is in the catalog and, with ACLs, the management token works.
func (c *Cluster) StartConsul(opts ConsulOptions) (*Consul, error) {
	name := opts.Name
	if name == "" {
		name = c.nextName("consul")
	}
	dir, err := c.ProcessDir(name)
	if err != nil {
		return nil, err
	}
	ip := opts.IP
	if ip == "" {
		ip = c.NewIP()
	}
	ports := [5]int{opts.HTTPPort, opts.DNSPort}
	for i := range ports {
		if ports[i] != 0 {
			continue
		}
		if ports[i], err = c.FreePort(ip); err != nil {
			return nil, err
		}
	}
	k := &Consul{
		HTTPPort: ports[0], DNSPort: ports[1], SerfLANPort: ports[2], SerfWANPort: ports[3], ServerPort: ports[4],
		ip: ip, node: name, dataDir: filepath.Join(dir, "data"),
	}
	if err := os.MkdirAll(k.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cfg, err := k.config(opts, dir, name)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("start %s: config: %w", name, err)
	}
	conf := filepath.Join(dir, "consul.json")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	k.Process, err = c.Start(ProcessSpec{
		Name: name, Argv: []string{"consul", "agent", "-config-file", conf}, IP: ip,
		Ports: ports[:], UDPPorts: []int{k.DNSPort, k.SerfLANPort, k.SerfWANPort},
		Ready: k.ready,
	})
	return k, err
}

// config is the Consul agent configuration of k for opts; with HTTPS it
// makes k's CA and certificate in dir.
func (k *Consul) config(opts ConsulOptions, dir, name string) (map[string]any, error) {
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	gossip := map[string]any{"gossip_interval": "100ms", "probe_interval": "100ms", "probe_timeout": "100ms", "suspicion_mult": 3}
	cfg := map[string]any{
		"node_name": name, "datacenter": "dc1", "server": true, "bootstrap_expect": 1,
		"data_dir": k.dataDir, "bind_addr": k.ip, "client_addr": k.ip, "advertise_addr": k.ip,
		"ports": map[string]int{
			"http": k.HTTPPort, "dns": k.DNSPort, "serf_lan": k.SerfLANPort, "serf_wan": k.SerfWANPort,
			"server": k.ServerPort, "grpc": -1, "grpc_tls": -1, "https": -1,
		},
		"ui_config": map[string]any{"enabled": true}, "log_level": opts.LogLevel,
		"disable_update_check": true, "disable_anonymous_signature": true,
		"enable_local_script_checks": false, "recursors": []string{},
		"dns_config": map[string]any{"allow_stale": true, "node_ttl": "0s", "service_ttl": map[string]string{"*": "0s"}},
		// Check output reaches the catalog at once, not every 5 minutes.
		"check_update_interval": "0s",
		"connect":               map[string]any{"enabled": false},
		"peering":               map[string]any{"enabled": false},
		"gossip_lan":            gossip, "gossip_wan": gossip,
		// The fastest Raft timings outside -dev (whose Raft state lives in memory,
		// which Restart(false) could not keep): a leader about 1.5s after start.
		"performance": map[string]any{"raft_multiplier": 1},
	}
	if opts.HTTPS {
		var err error
		if k.CA, err = NewCA(dir, name); err != nil {
			return nil, err
		}
		certFile, keyFile, err := k.CA.Issue(name+"-server", []string{k.ip}, "server.dc1.consul", "localhost")
		if err != nil {
			return nil, err
		}
		ports := cfg["ports"].(map[string]int)
		ports["http"], ports["https"] = -1, k.HTTPPort
		cfg["tls"] = map[string]any{"defaults": map[string]any{
			"ca_file": k.CA.CertFile, "cert_file": certFile, "key_file": keyFile,
			"verify_incoming": false, "verify_outgoing": false,
		}}
	}
	if opts.ACL {
		k.token = newUUID()
		cfg["acl"] = map[string]any{
			"enabled": true, "default_policy": "deny", "down_policy": "extend-cache", "enable_token_persistence": true,
			"tokens": map[string]string{"initial_management": k.token, "agent": k.token, "dns": k.token},
		}
	}
	for key, v := range opts.Extra {
		cfg[key] = v
	}
	return cfg, nil
}

func (k *Consul) ready(ctx context.Context) error {
	cl, err := k.ClientWithToken(k.token)
	if err != nil {
		return err
	}
	q := (&api.QueryOptions{}).WithContext(ctx)
	leader, err := cl.Status().LeaderWithQueryOptions(q)
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader yet")
	}
	if k.token != "" {
		if _, _, err := cl.ACL().TokenReadSelf(q); err != nil {
			return fmt.Errorf("management token: %w", err)
		}
	}
	node, _, err := cl.Catalog().Node(k.node, q)
	if err != nil {
		return err
	}
	if node == nil {
		return fmt.Errorf("node %s not in the catalog yet", k.node)
	}
	return nil
}

// HTTPAddr is the HTTP API address (ip:port), as CONSUL_HTTP_ADDR wants it.
// With HTTPS, clients need the scheme too: see HTTPURL.
func (k *Consul) HTTPAddr() string { return net.JoinHostPort(k.ip, strconv.Itoa(k.HTTPPort)) }

// HTTPURL is the HTTP API address with its scheme: http://ip:port, or
// https://ip:port with ConsulOptions.HTTPS.
func (k *Consul) HTTPURL() string {
	if k.CA != nil {
		return "https://" + k.HTTPAddr()
	}
	return "http://" + k.HTTPAddr()
}

// DNSAddr is the DNS server address (ip:port, UDP and TCP).
func (k *Consul) DNSAddr() string { return net.JoinHostPort(k.ip, strconv.Itoa(k.DNSPort)) }

// NodeName is the Consul node name of the server.
func (k *Consul) NodeName() string { return k.node }

// Token is the management token ("" without ACLs).
func (k *Consul) Token() string { return k.token }

// Client returns an API client holding the management token.
func (k *Consul) Client() (*api.Client, error) { return k.ClientWithToken(k.token) }

// ClientWithToken returns an API client using token. An empty token falls back
// to CONSUL_HTTP_TOKEN like every api client; pass "anonymous" to be anonymous.
func (k *Consul) ClientWithToken(token string) (*api.Client, error) {
	cfg := &api.Config{
		Address: k.HTTPAddr(), Token: token,
		HttpClient: &http.Client{Timeout: 5 * time.Second},
	}
	if k.CA != nil {
		tc, err := api.SetupTLSConfig(&api.TLSConfig{CAFile: k.CA.CertFile})
		if err != nil {
			return nil, fmt.Errorf("consul client for %s: %w", k.HTTPAddr(), err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		cfg.Scheme, cfg.HttpClient.Transport = "https", tr
	}
	cl, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", k.HTTPAddr(), err)
	}
	return cl, nil
}

// Restart stops Consul, deletes its data directory if wipeState (it then forgets
// every registration, KV entry and ACL token except the management token), and
// starts it again on the same ports.
func (k *Consul) Restart(wipeState bool) error {
	_ = k.Stop() // a Consul that needed SIGKILL is gone all the same
	if wipeState {
		if err := os.RemoveAll(k.dataDir); err != nil {
			return fmt.Errorf("wipe %s: %w", k.dataDir, err)
		}
		if err := os.MkdirAll(k.dataDir, 0o755); err != nil {
			return fmt.Errorf("wipe %s: %w", k.dataDir, err)
		}
	}
	return k.Process.Restart()
}

// CreateToken creates a policy with rules (HCL) and a token holding only that
// policy, and returns the token's secret.
func (k *Consul) CreateToken(ctx context.Context, rules string) (string, error) {
	cl, err := k.Client()
	if err != nil {
		return "", err
	}
	w := (&api.WriteOptions{}).WithContext(ctx)
	pol, _, err := cl.ACL().PolicyCreate(&api.ACLPolicy{Name: "harness-" + newUUID()[:8], Rules: rules}, w)
	if err != nil {
		return "", fmt.Errorf("create policy: %w", err)
	}
	tok, _, err := cl.ACL().TokenCreate(&api.ACLToken{
		Description: "harness " + pol.Name, Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}},
	}, w)
	if err != nil {
		return "", fmt.Errorf("create token for %s: %w", pol.Name, err)
	}
	return tok.SecretID, nil
}

// resolver asks this Consul's DNS server only.
func (k *Consul) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, k.DNSAddr())
	}}
}

// LookupA returns the IPv4 addresses Consul DNS answers for name (".consul" names,
// a trailing dot is optional). No such name or no records is an empty list, not
// an error, so callers can wait for an answer to disappear.
func (k *Consul) LookupA(ctx context.Context, name string) ([]string, error) {
	ips, err := k.resolver().LookupIP(ctx, "ip4", fqdn(name))
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lookup A %s at %s: %w", name, k.DNSAddr(), err)
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out, nil
}

// LookupSRV returns the SRV records Consul DNS answers for name, e.g.
// "twemproxy.service.consul"; none is an empty list, not an error.
func (k *Consul) LookupSRV(ctx context.Context, name string) ([]*net.SRV, error) {
	_, srvs, err := k.resolver().LookupSRV(ctx, "", "", fqdn(name))
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return []*net.SRV{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lookup SRV %s at %s: %w", name, k.DNSAddr(), err)
	}
	return srvs, nil
}

func fqdn(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
