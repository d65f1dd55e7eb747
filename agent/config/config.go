// Package config loads and checks the agent's YAML configuration (docs/CONFIG.md).
// Values come from defaults, then the file, then the environment, then
// flags; unknown keys are errors, and Validate reports every problem at once
// so an operator fixes a file in one pass.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole agent configuration.
type Config struct {
	NodeName  string          `yaml:"node_name"`
	Consul    Consul          `yaml:"consul"`
	Sentinel  Sentinel        `yaml:"sentinel"`
	Redis     []Redis         `yaml:"redis"`
	Sentinels []LocalSentinel `yaml:"sentinels"`
	Twemproxy []Twemproxy     `yaml:"twemproxy"`
	HAProxy   []HAProxy       `yaml:"haproxy"`
	Failover  Failover        `yaml:"failover"`
	HTTP      HTTP            `yaml:"http"`
	Log       Log             `yaml:"log"`
	Timing    Timing          `yaml:"timing"`
}

// Consul says how to reach the host's Consul agent. Empty values fall back to
// the Consul CLI's environment variables (CONSUL_HTTP_ADDR and friends).
type Consul struct {
	Address            string `yaml:"address"`
	Scheme             string `yaml:"scheme"`
	Datacenter         string `yaml:"datacenter"`
	TokenFile          string `yaml:"token_file"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	TLSServerName      string `yaml:"tls_server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	// Token is only ever set from CONSUL_HTTP_TOKEN, never from the file,
	// so a config file can be shared without leaking it.
	Token string `yaml:"-"`
	// TTL of every check the agent registers; refreshed at a third of it.
	TTL Duration `yaml:"ttl"`
	// DeregisterAfter removes a service whose check stayed critical this long
	// (a host that died for good).
	DeregisterAfter Duration `yaml:"deregister_critical_after"`
}

// Sentinel says how this agent reaches the Sentinels that decide masters.
type Sentinel struct {
	Addresses     []string `yaml:"addresses"`
	ConsulService string   `yaml:"consul_service"`
	Username      string   `yaml:"username"`
	PasswordFile  string   `yaml:"password_file"`
	TLS           TLS      `yaml:"tls"`
	// Password is read from PasswordFile; never logged.
	Password string `yaml:"-"`
	// RedisAuth is how the agent reaches the Redis nodes the Sentinels name,
	// which it asks ROLE to confirm a +switch-master. An agent beside
	// twemproxy alone has no redis entry whose credentials it could borrow.
	RedisAuth RedisAuth `yaml:"redis_auth"`
}

// RedisAuth is a Redis client identity: an ACL user, a password file and
// TLS. Unset (IsZero), the Monitor uses the first redis entry's.
type RedisAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	TLS          TLS    `yaml:"tls"`
	// Password is read from PasswordFile; never logged.
	Password string `yaml:"-"`
}

// IsZero reports whether nothing was set, so that the first redis entry's
// credentials apply.
func (a RedisAuth) IsZero() bool { return a == RedisAuth{} }

// TLS configures a TLS client connection to Redis or Sentinel.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Redis is one local Redis instance to register.
type Redis struct {
	Address      string `yaml:"address"`
	Announce     string `yaml:"announce"`
	MasterName   string `yaml:"master_name"`
	Service      string `yaml:"service"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	TLS          TLS    `yaml:"tls"`
	Password     string `yaml:"-"`
}

// LocalSentinel is one local Sentinel to register as redis-sentinel.
type LocalSentinel struct {
	Address      string `yaml:"address"`
	Announce     string `yaml:"announce"`
	Service      string `yaml:"service"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	TLS          TLS    `yaml:"tls"`
	Password     string `yaml:"-"`
}

// Twemproxy is one local twemproxy (nutcracker) the agent manages.
type Twemproxy struct {
	Name       string  `yaml:"name"`
	ConfigFile string  `yaml:"config_file"`
	Template   string  `yaml:"template"`
	Restart    Restart `yaml:"restart"`
	Wait       Wait    `yaml:"wait"`
	Service    string  `yaml:"service"`
	// Announce is the host written into Consul for the pools; default: the
	// pool's listen host.
	Announce string `yaml:"announce"`
	// Nutcracker is the binary used for --test-conf validation.
	Nutcracker string `yaml:"nutcracker"`
}

// Restart modes.
const (
	RestartSupervise = "supervise"
	RestartCommand   = "command"
)

// Restart says how a new config takes effect.
type Restart struct {
	Mode           string   `yaml:"mode"`
	Command        []string `yaml:"command"`
	RestartCommand []string `yaml:"restart_command"`
	Timeout        Duration `yaml:"timeout"`
}

// Wait is consul-template's quiescence: hold the first run for Min to gather
// a burst, but never longer than Max.
type Wait struct {
	Min Duration `yaml:"min"`
	Max Duration `yaml:"max"`
	// Settle is the quiet time that ends a burst: changes arriving while a
	// run is in flight, or within Settle of the last one, coalesce into one
	// run (default 50ms; negative: none).
	Settle Duration `yaml:"settle"`
}

// HTTP is the status API, metrics and dashboard listener.
type HTTP struct {
	Address string `yaml:"address"`
}

// Log configures go-hclog.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Timing holds the loop periods; the defaults suit production, tests and
// benchmarks shrink them.
type Timing struct {
	// Tick is the role re-evaluation period of a local Redis.
	Tick Duration `yaml:"tick"`
	// SentinelTimeout bounds one query to one Sentinel.
	SentinelTimeout Duration `yaml:"sentinel_timeout"`
	// SentinelResync is the period of the full resync from every Sentinel.
	SentinelResync Duration `yaml:"sentinel_resync"`
	// ConsulResync is the period of the "am I still registered?" check.
	ConsulResync Duration `yaml:"consul_resync"`
	// ProxyCheck is the period of the twemproxy pool health check.
	ProxyCheck Duration `yaml:"proxy_check"`
	// StaleMasterGrace is how long a local master keeps its master tag
	// while no Sentinel majority confirms it; "-1s" keeps it for ever.
	// Keep it below Sentinel's down-after-milliseconds.
	StaleMasterGrace Duration `yaml:"stale_master_grace"`
	// MasterHandoff is how long a node Sentinel just promoted waits for the
	// old master to leave Consul's answers for the master name before it
	// takes the master tag; 0 takes it at once.
	MasterHandoff Duration `yaml:"master_handoff"`
	// TruthWait is how long each local Redis waits at start for the first
	// Sentinel truth of its master name before its first write to Consul,
	// so that no role is decided on nothing; 0 does not wait. Past it the
	// role is written without the truth, and no master tag until Sentinel
	// names the node.
	TruthWait Duration `yaml:"truth_wait"`
}

// Duration is a time.Duration written in Go syntax ("500ms", "2s").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses Go duration syntax and reports the line of a bad value
// as a yaml.TypeError, so that the decoder goes on and collects every problem.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration (want Go syntax such as 500ms or 2s)", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes Go duration syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Defaults returns the configuration before any file is read.
func Defaults() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName: host,
		Consul: Consul{
			TTL:             Duration(10 * time.Second),
			DeregisterAfter: Duration(10 * time.Minute),
		},
		HTTP:     HTTP{Address: "127.0.0.1:8765"},
		Failover: Failover{ActOn: ActOnPromotion, PauseWrites: true, PauseSlice: Duration(300 * time.Millisecond)},
		Log:      Log{Level: "info", Format: "text"},
		Timing: Timing{
			Tick:             Duration(time.Second),
			SentinelTimeout:  Duration(300 * time.Millisecond),
			SentinelResync:   Duration(time.Second),
			ConsulResync:     Duration(2 * time.Second),
			ProxyCheck:       Duration(time.Second),
			StaleMasterGrace: Duration(5 * time.Second),
			MasterHandoff:    Duration(500 * time.Millisecond),
			TruthWait:        Duration(3 * time.Second),
		},
	}
}

// Problems is every problem found in a configuration.
type Problems []string

func (p Problems) Error() string {
	if len(p) == 1 {
		return p[0]
	}
	return fmt.Sprintf("%d problems:\n  - %s", len(p), strings.Join(p, "\n  - "))
}

// Load reads the file at path on top of the defaults, applies env (a
// getenv function, os.Getenv in production) and then flags, fills per-entry defaults, reads
// secret files, and validates. The returned error is a Problems listing
// everything wrong, or a plain error when the file cannot be read at all.
func Load(path string, getenv func(string) string, flags Overrides) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, probs := Parse(raw)
	if c == nil {
		return nil, probs
	}
	c.ApplyEnv(getenv)
	flags.Apply(c)
	probs = append(probs, c.Finish()...)
	if len(probs) > 0 {
		return c, probs
	}
	return c, nil
}

// Parse decodes YAML on top of the defaults. Unknown keys and badly typed
// values are collected as problems; c is nil only when the YAML itself is
// malformed.
func Parse(raw []byte) (*Config, Problems) {
	c := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	if errors.Is(err, io.EOF) || err == nil {
		return &c, nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		probs := make(Problems, 0, len(te.Errors))
		for _, e := range te.Errors {
			probs = append(probs, friendlyYAMLError(e))
		}
		return &c, probs
	}
	return nil, Problems{fmt.Sprintf("malformed YAML: %v", err)}
}

// ApplyEnv overlays the environment: the Consul CLI variables and RCA_*.
func (c *Config) ApplyEnv(getenv func(string) string) {
	set := func(dst *string, key string) {
		if v := getenv(key); v != "" {
			*dst = v
		}
	}
	set(&c.Consul.Address, "CONSUL_HTTP_ADDR")
	set(&c.Consul.Token, "CONSUL_HTTP_TOKEN")
	set(&c.Consul.TokenFile, "CONSUL_HTTP_TOKEN_FILE")
	set(&c.Consul.CAFile, "CONSUL_CACERT")
	set(&c.Consul.CertFile, "CONSUL_CLIENT_CERT")
	set(&c.Consul.KeyFile, "CONSUL_CLIENT_KEY")
	set(&c.Consul.TLSServerName, "CONSUL_TLS_SERVER_NAME")
	set(&c.Consul.Datacenter, "CONSUL_DATACENTER")
	if v, err := strconv.ParseBool(getenv("CONSUL_HTTP_SSL")); err == nil && v {
		c.Consul.Scheme = "https"
	}
	if v, err := strconv.ParseBool(getenv("CONSUL_HTTP_SSL_VERIFY")); err == nil && !v {
		c.Consul.InsecureSkipVerify = true
	}
	set(&c.NodeName, "RCA_NODE_NAME")
	set(&c.HTTP.Address, "RCA_HTTP_ADDR")
	set(&c.Log.Level, "RCA_LOG_LEVEL")
	set(&c.Log.Format, "RCA_LOG_FORMAT")
}

// Overrides are the values given as command-line flags; empty means unset.
type Overrides struct {
	NodeName, ConsulAddress, HTTPAddress, LogLevel, LogFormat string
}

// Apply puts flag values on top of everything else.
func (o Overrides) Apply(c *Config) {
	for _, kv := range []struct {
		dst *string
		v   string
	}{
		{&c.NodeName, o.NodeName}, {&c.Consul.Address, o.ConsulAddress},
		{&c.HTTP.Address, o.HTTPAddress}, {&c.Log.Level, o.LogLevel}, {&c.Log.Format, o.LogFormat},
	} {
		if kv.v != "" {
			*kv.dst = kv.v
		}
	}
}

var unknownKeyRe = regexp.MustCompile(`^line (\d+): field (\S+) not found in type config\.(\w+)$`)

// sections names the YAML section each config type is decoded from.
var sections = map[string]string{
	"Config": "the top level", "Consul": "consul", "Sentinel": "sentinel", "TLS": "a tls section",
	"Redis": "a redis entry", "LocalSentinel": "a sentinels entry", "Twemproxy": "a twemproxy entry",
	"Restart": "twemproxy restart", "Wait": "twemproxy wait", "HTTP": "http", "Log": "log", "Timing": "timing", "Failover": "failover",
	"HAProxy": "a haproxy entry", "HAProxyServer": "a haproxy server", "HAProxyFrontend": "a haproxy frontend",
}

// friendlyYAMLError turns yaml.v3's Go-centric unknown-field message into
// one that names the key and the section of the file.
func friendlyYAMLError(e string) string {
	m := unknownKeyRe.FindStringSubmatch(e)
	if m == nil {
		return e
	}
	sec := sections[m[3]]
	if sec == "" {
		sec = m[3]
	}
	return fmt.Sprintf("line %s: unknown key %q in %s", m[1], m[2], sec)
}

// RedisService is the Consul service name of the local Redis announced at
// announce ("redis" when it is not one of ours).
func (c *Config) RedisService(announce string) string {
	for _, r := range c.Redis {
		if r.Announce == announce && r.Service != "" {
			return r.Service
		}
	}
	return "redis"
}

// RedisServices lists the Consul service names Redis is registered under,
// "redis" at least, so the dashboard shows the cluster even from an agent
// that has no local Redis.
func (c *Config) RedisServices() []string {
	return uniq("redis", func(yield func(string) bool) {
		for _, r := range c.Redis {
			if !yield(r.Service) {
				return
			}
		}
	})
}

// SentinelService is the service Sentinels are registered under.
func (c *Config) SentinelService() string {
	if c.Sentinel.ConsulService != "" {
		return c.Sentinel.ConsulService
	}
	for _, s := range c.Sentinels {
		if s.Service != "" {
			return s.Service
		}
	}
	return "redis-sentinel"
}

// TwemproxyServices lists the service names twemproxy pools use.
func (c *Config) TwemproxyServices() []string {
	return uniq("twemproxy", func(yield func(string) bool) {
		for _, t := range c.Twemproxy {
			if !yield(t.Service) {
				return
			}
		}
	})
}

func uniq(first string, seq func(func(string) bool)) []string {
	out := []string{first}
	for s := range seq {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
