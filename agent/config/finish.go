package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Finish fills the defaults that depend on other values, reads the secret
// files and checks everything. It returns every problem found, each naming
// the key and the bad value.
func (c *Config) Finish() Problems {
	f := &finisher{c: c}
	f.node()
	f.consul()
	f.sentinel()
	f.redis()
	f.localSentinels()
	f.twemproxy()
	c.finishHAProxy(f.bad)
	f.rest()
	sortProblems(f.p)
	return f.p
}

// finisher collects the problems of one Finish, one section per method.
type finisher struct {
	c *Config
	p Problems
}

// bad records a problem with key.
func (f *finisher) bad(key string, format string, args ...any) {
	f.p = append(f.p, key+": "+fmt.Sprintf(format, args...))
}

// secret reads a password or token file into dst; an unreadable file is a
// problem of key. The secret itself never reaches a message.
func (f *finisher) secret(key, path string, dst *string) {
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		f.bad(key, "cannot read %q: %v", path, errUnwrap(err))
		return
	}
	*dst = strings.TrimSpace(string(b))
}

// node checks node_name.
func (f *finisher) node() {
	c := f.c
	if c.NodeName == "" {
		f.bad("node_name", "empty, and the hostname is unknown")
	} else if !labelRe.MatchString(c.NodeName) {
		f.bad("node_name", "%q: use letters, digits, '-', '_' or '.'", c.NodeName)
	}
}

// consul checks the consul section and reads its token file.
func (f *finisher) consul() {
	c := f.c
	if c.Consul.Token == "" {
		f.secret("consul.token_file", c.Consul.TokenFile, &c.Consul.Token)
	}
	if c.Consul.Scheme != "" && c.Consul.Scheme != "http" && c.Consul.Scheme != "https" {
		f.bad("consul.scheme", "%q: want http or https", c.Consul.Scheme)
	}
	for key, path := range map[string]string{"consul.ca_file": c.Consul.CAFile, "consul.cert_file": c.Consul.CertFile, "consul.key_file": c.Consul.KeyFile} {
		if path != "" {
			if _, err := os.Stat(path); err != nil {
				f.bad(key, "%q: %v", path, errUnwrap(err))
			}
		}
	}
	if c.Consul.TTL.D() < 2*c.Timing.Tick.D() || c.Consul.TTL <= 0 {
		f.bad("consul.ttl", "%s: must be at least twice timing.tick (%s)", c.Consul.TTL.D(), c.Timing.Tick.D())
	}
}

// sentinel checks the sentinel section and reads its password files.
func (f *finisher) sentinel() {
	c := f.c
	for i, a := range c.Sentinel.Addresses {
		if err := checkHostPort(a); err != nil {
			f.bad(fmt.Sprintf("sentinel.addresses[%d]", i), "%q: %v", a, err)
		}
	}
	f.secret("sentinel.password_file", c.Sentinel.PasswordFile, &c.Sentinel.Password)
	ra := &c.Sentinel.RedisAuth
	if ra.Username != "" && ra.PasswordFile == "" {
		f.bad("sentinel.redis_auth.username", "%q without password_file: Redis AUTH needs both", ra.Username)
	}
	f.secret("sentinel.redis_auth.password_file", ra.PasswordFile, &ra.Password)
	checkTLS("sentinel.redis_auth.tls", ra.TLS, f.bad)
	needSentinel := len(c.Redis) > 0 || len(c.Twemproxy) > 0 || len(c.HAProxy) > 0
	if needSentinel && len(c.Sentinel.Addresses) == 0 && c.Sentinel.ConsulService == "" {
		f.bad("sentinel", "no addresses and no consul_service: the agent needs Sentinels to follow masters")
	}
}

// redis checks the redis entries and sets their defaults.
func (f *finisher) redis() {
	c := f.c
	seen := map[string]string{}
	for i := range c.Redis {
		r := &c.Redis[i]
		key := fmt.Sprintf("redis[%d]", i)
		if err := checkHostPort(r.Address); err != nil {
			f.bad(key+".address", "%q: %v", r.Address, err)
		}
		if r.Announce == "" {
			r.Announce = r.Address
		} else if err := checkHostPort(r.Announce); err != nil {
			f.bad(key+".announce", "%q: %v", r.Announce, err)
		}
		if r.MasterName == "" {
			f.bad(key+".master_name", "missing: the Sentinel master name this instance belongs to")
		}
		if r.Service == "" {
			r.Service = "redis"
		} else if !serviceRe.MatchString(r.Service) {
			f.bad(key+".service", "%q: use lowercase letters, digits and '-'", r.Service)
		}
		if prev, ok := seen[r.Announce]; ok && r.Announce != "" {
			f.bad(key+".announce", "%q is also %s: two entries would register the same service", r.Announce, prev)
		}
		seen[r.Announce] = key
		f.secret(key+".password_file", r.PasswordFile, &r.Password)
		checkTLS(key+".tls", r.TLS, f.bad)
	}
	checkTLS("sentinel.tls", c.Sentinel.TLS, f.bad)
}

// localSentinels checks the sentinels entries; they inherit the sentinel section's credentials and TLS.
func (f *finisher) localSentinels() {
	c := f.c
	for i := range c.Sentinels {
		s := &c.Sentinels[i]
		key := fmt.Sprintf("sentinels[%d]", i)
		if err := checkHostPort(s.Address); err != nil {
			f.bad(key+".address", "%q: %v", s.Address, err)
		}
		if s.Announce == "" {
			s.Announce = s.Address
		} else if err := checkHostPort(s.Announce); err != nil {
			f.bad(key+".announce", "%q: %v", s.Announce, err)
		}
		if s.Service == "" {
			s.Service = "redis-sentinel"
		}
		if s.Username == "" {
			s.Username = c.Sentinel.Username
		}
		if s.PasswordFile == "" {
			s.PasswordFile = c.Sentinel.PasswordFile
		}
		f.secret(key+".password_file", s.PasswordFile, &s.Password)
		// A local Sentinel is one of those the sentinel section reaches:
		// without this a sentinels entry with no tls of its own spoke
		// plain TCP to a TLS-only Sentinel.
		if s.TLS == (TLS{}) {
			s.TLS = c.Sentinel.TLS
		}
		checkTLS(key+".tls", s.TLS, f.bad)
	}
}

// twemproxy checks the twemproxy entries and sets their defaults.
func (f *finisher) twemproxy() {
	c := f.c
	names := map[string]bool{}
	for i := range c.Twemproxy {
		t := &c.Twemproxy[i]
		key := fmt.Sprintf("twemproxy[%d]", i)
		if t.Name == "" {
			f.bad(key+".name", "missing")
		} else if !labelRe.MatchString(t.Name) {
			f.bad(key+".name", "%q: use letters, digits, '-', '_' or '.'", t.Name)
		} else if names[t.Name] {
			f.bad(key+".name", "%q used twice", t.Name)
		}
		names[t.Name] = true
		if t.ConfigFile == "" {
			f.bad(key+".config_file", "missing")
		} else if _, err := os.Stat(filepath.Dir(t.ConfigFile)); err != nil {
			f.bad(key+".config_file", "%q: directory: %v", t.ConfigFile, errUnwrap(err))
		}
		if t.Template != "" {
			if _, err := os.Stat(t.Template); err != nil {
				f.bad(key+".template", "%q: %v", t.Template, errUnwrap(err))
			}
		}
		if t.Service == "" {
			t.Service = "twemproxy"
		}
		if t.Nutcracker == "" {
			t.Nutcracker = "nutcracker"
		}
		if t.Restart.Mode == "" {
			t.Restart.Mode = RestartSupervise
		}
		if t.Restart.Timeout == 0 {
			t.Restart.Timeout = Duration(10e9)
		}
		switch t.Restart.Mode {
		case RestartSupervise:
			if len(t.Restart.Command) == 0 {
				t.Restart.Command = []string{t.Nutcracker, "-c", t.ConfigFile}
			}
			if len(t.Restart.RestartCommand) > 0 {
				f.bad(key+".restart.restart_command", "only used with mode: command")
			}
		case RestartCommand:
			if len(t.Restart.RestartCommand) == 0 {
				f.bad(key+".restart.restart_command", "missing: the argv that restarts twemproxy, e.g. [systemctl, restart, nutcracker]")
			}
		default:
			f.bad(key+".restart.mode", "%q: want supervise or command", t.Restart.Mode)
		}
		if t.Wait.Min < 0 || t.Wait.Max < 0 {
			f.bad(key+".wait", "negative durations")
		}
		if t.Wait.Max > 0 && t.Wait.Min > t.Wait.Max {
			f.bad(key+".wait", "min %s is greater than max %s", t.Wait.Min.D(), t.Wait.Max.D())
		}
		if t.Wait.Min > 0 && t.Wait.Max == 0 {
			t.Wait.Max = 4 * t.Wait.Min
		}
	}
}

// rest checks http, log, timing and failover, and that there is something to do.
func (f *finisher) rest() {
	c := f.c
	if c.HTTP.Address != "" {
		if err := checkHostPort(c.HTTP.Address); err != nil {
			f.bad("http.address", "%q: %v", c.HTTP.Address, err)
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "trace", "debug", "info", "warn", "error":
	default:
		f.bad("log.level", "%q: want trace, debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		f.bad("log.format", "%q: want text or json", c.Log.Format)
	}
	for key, d := range map[string]Duration{
		"timing.tick": c.Timing.Tick, "timing.sentinel_timeout": c.Timing.SentinelTimeout,
		"timing.sentinel_resync": c.Timing.SentinelResync, "timing.consul_resync": c.Timing.ConsulResync,
		"timing.proxy_check": c.Timing.ProxyCheck,
	} {
		if d <= 0 {
			f.bad(key, "%s: must be positive", d.D())
		}
	}
	if c.Timing.MasterHandoff < 0 {
		f.bad("timing.master_handoff", "%s: must be 0 (off) or positive", c.Timing.MasterHandoff.D())
	}
	if c.Timing.TruthWait < 0 {
		f.bad("timing.truth_wait", "%s: must be 0 (do not wait) or positive", c.Timing.TruthWait.D())
	}
	if c.Failover.ActOn != ActOnPromotion && c.Failover.ActOn != ActOnAnnouncement {
		f.bad("failover.act_on", "%q: want %s or %s", c.Failover.ActOn, ActOnPromotion, ActOnAnnouncement)
	}
	if d := c.Failover.PauseSlice.D(); d < 50*time.Millisecond || d > 5*time.Second {
		f.bad("failover.pause_slice", "%s: want 50ms to 5s (Redis stays paused this long after an agent that dies)", d)
	}
	if len(c.Redis)+len(c.Sentinels)+len(c.Twemproxy)+len(c.HAProxy) == 0 {
		f.bad("redis/sentinels/twemproxy/haproxy", "nothing to do: list at least one local instance")
	}
}

var (
	labelRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	serviceRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

func checkHostPort(s string) error {
	if s == "" {
		return fmt.Errorf("missing")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port")
	}
	if host == "" {
		return fmt.Errorf("empty host")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func checkTLS(key string, t TLS, bad func(string, string, ...any)) {
	if !t.Enabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
			bad(key, "files given but enabled is false")
		}
		return
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad(key, "cert_file and key_file go together")
	}
	for k, path := range map[string]string{"ca_file": t.CAFile, "cert_file": t.CertFile, "key_file": t.KeyFile} {
		if path != "" {
			if _, err := os.Stat(path); err != nil {
				bad(key+"."+k, "%q: %v", path, errUnwrap(err))
			}
		}
	}
}

// errUnwrap drops the "open PATH:" prefix that os errors repeat.
func errUnwrap(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// sortProblems keeps the output stable for people and tests: map iteration
// above is random.
func sortProblems(p Problems) { slices.Sort(p) }
