package sandbox

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure one redis-server.
type RedisOptions struct {
	Name      string   // default redis-N
	ReplicaOf string   // master "ip:port" (e.g. master.Addr()); empty: a master
	Password  string   // requirepass and masterauth
	Extra     []string // more config lines
	// Hosts, when set, names the server's host in it (<name>.<domain>) and
	// makes the server announce that name to its master
	// (replica-announce-ip), as Sentinel's announce-hostnames expects.
	Hosts *Hosts
	// TLS, when set, makes the server listen on TLS only with a
	// certificate from this CA for its IP, require client certificates
	// from it and replicate over TLS (see tlsServer).
	TLS *CA
}

// Redis is a running redis-server.
type Redis struct {
	*Process
	Password string
	// Hostname is the name RedisOptions.Hosts gave the host, or "".
	Hostname string
	// TLS is the client config the helpers reach a TLS-only server with
	// (nil: plain TCP); it presents the server's own certificate.
	TLS *tls.Config
}

// Announced is the address the server announces: Hostname:port, or Addr.
func (r *Redis) Announced() string {
	if r.Hostname == "" {
		return r.Addr()
	}
	return net.JoinHostPort(r.Hostname, strconv.Itoa(r.Port()))
}

// StartRedis starts a redis-server on a new host and waits until it answers PING.
// Replication waits are separate: see WaitReplicaLinked.
func (c *Cluster) StartRedis(opts RedisOptions) (*Redis, error) {
	name := opts.Name
	if name == "" {
		name = c.nextName("redis")
	}
	ip := c.NewIP()
	port, err := c.FreePort(ip)
	if err != nil {
		return nil, err
	}
	dir, err := c.ProcessDir(name)
	if err != nil {
		return nil, err
	}
	announce := ip
	if opts.Hosts != nil {
		if announce, err = opts.Hosts.Add(name, ip); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	lines := []string{
		"bind " + ip, "port " + strconv.Itoa(port), "dir " + dir, `logfile ""`,
		"protected-mode no", "daemonize no", `save ""`, "appendonly no",
		"replica-announce-ip " + announce,
		// A replica links at once instead of after the default 5s diskless delay.
		"repl-diskless-sync yes", "repl-diskless-sync-delay 0",
	}
	if opts.ReplicaOf != "" {
		host, p, err := net.SplitHostPort(opts.ReplicaOf)
		if err != nil {
			return nil, fmt.Errorf("start %s: replica of %q: %w", name, opts.ReplicaOf, err)
		}
		lines = append(lines, "replicaof "+host+" "+p)
	}
	if opts.Password != "" {
		lines = append(lines, "requirepass "+opts.Password, "masterauth "+opts.Password)
	}
	r := &Redis{Password: opts.Password}
	if opts.Hosts != nil {
		r.Hostname = announce
	}
	if opts.TLS != nil {
		tlsLines, tc, err := tlsServer(opts.TLS, name, ip, port, r.Hostname)
		if err != nil {
			return nil, err
		}
		lines, r.TLS = append(lines, tlsLines...), tc
	}
	conf := filepath.Join(dir, "redis.conf")
	if err := writeLines(conf, append(lines, opts.Extra...)); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	r.Process, err = c.Start(ProcessSpec{
		Name: name, Argv: []string{"redis-server", conf}, IP: ip, Ports: []int{port},
		Ready: func(ctx context.Context) error { return ping(ctx, addr, opts.Password, r.TLS) },
	})
	return r, err
}

// Client returns a new fail-fast go-redis client for this server; close it.
func (r *Redis) Client() *redis.Client { return NewTLSClient(r.Addr(), r.Password, r.TLS) }

// Info returns INFO section as a map.
func (r *Redis) Info(ctx context.Context, section string) (map[string]string, error) {
	cl := r.Client()
	defer cl.Close()
	s, err := cl.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("INFO %s on %s: %w", section, r.Name(), err)
	}
	return parseInfo(s), nil
}

// Role is "master" or "slave", from INFO replication.
func (r *Redis) Role(ctx context.Context) (string, error) {
	return roleOf(ctx, r.Addr(), r.Password, r.TLS)
}

// WaitReplicaLinked waits until this replica reports master_link_status:up.
func (r *Redis) WaitReplicaLinked(ctx context.Context) error {
	return poll(ctx, r.Name()+" replication link", func(ctx context.Context) error {
		info, err := r.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if info["role"] != "slave" || info["master_link_status"] != "up" {
			return fmt.Errorf("role=%s master_link_status=%s", info["role"], info["master_link_status"])
		}
		return nil
	})
}

// WaitRole waits until the server reports role ("master" or "slave").
func (r *Redis) WaitRole(ctx context.Context, role string) error {
	return poll(ctx, r.Name()+" role "+role, func(ctx context.Context) error {
		got, err := r.Role(ctx)
		if err == nil && got != role {
			err = fmt.Errorf("role is %s", got)
		}
		return err
	})
}

func ping(ctx context.Context, addr, password string, tc *tls.Config) error {
	cl := NewTLSClient(addr, password, tc)
	defer cl.Close()
	return cl.Ping(ctx).Err()
}

func writeLines(path string, lines []string) error {
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Monitor is one master a Sentinel watches.
type Monitor struct {
	Name   string // Sentinel master name
	Master string // "ip:port"
	Quorum int    // default 2
}

// SentinelOptions configure one redis-sentinel; the timings apply to every
// master it monitors, including those added later with Monitor.
type SentinelOptions struct {
	Name            string // default sentinel-N
	Monitors        []Monitor
	DownAfter       time.Duration // down-after-milliseconds, default 1s
	FailoverTimeout time.Duration // default 3s
	ParallelSyncs   int           // default 1
	Password        string        // auth-pass for the monitored masters
	RequirePass     string        // the Sentinel's own password (also sentinel-pass)
	Extra           []string      // more config lines
	// Hostnames turns on resolve-hostnames and announce-hostnames: the
	// Sentinel accepts hostnames (in SENTINEL MONITOR, from replicas'
	// replica-announce-ip) and reports nodes by them.
	Hostnames bool
	// TLS, when set, makes the Sentinel serve TLS only with a certificate
	// from this CA and talk TLS to the nodes it monitors and to the other
	// Sentinels, as RedisOptions.TLS does.
	TLS *CA
}

// Sentinel is a running redis-sentinel.
type Sentinel struct {
	*Process
	opts SentinelOptions
	// TLS is the client config the helpers reach a TLS-only Sentinel with
	// (nil: plain TCP).
	TLS *tls.Config
}

// StartSentinel starts a redis-sentinel on a new host and waits until it
// answers PING. Its config file is writable: Sentinel rewrites it.
func (c *Cluster) StartSentinel(opts SentinelOptions) (*Sentinel, error) {
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Second
	}
	if opts.FailoverTimeout <= 0 {
		opts.FailoverTimeout = 3 * time.Second
	}
	if opts.ParallelSyncs <= 0 {
		opts.ParallelSyncs = 1
	}
	name := opts.Name
	if name == "" {
		name = c.nextName("sentinel")
	}
	ip := c.NewIP()
	port, err := c.FreePort(ip)
	if err != nil {
		return nil, err
	}
	dir, err := c.ProcessDir(name)
	if err != nil {
		return nil, err
	}
	hostnames := "no"
	if opts.Hostnames {
		hostnames = "yes"
	}
	lines := []string{
		"bind " + ip, "port " + strconv.Itoa(port), "dir " + dir, `logfile ""`,
		"protected-mode no", "daemonize no",
		"sentinel resolve-hostnames " + hostnames, "sentinel announce-hostnames " + hostnames,
		"sentinel announce-ip " + ip, "sentinel announce-port " + strconv.Itoa(port),
	}
	if opts.RequirePass != "" {
		lines = append(lines, "requirepass "+opts.RequirePass, "sentinel sentinel-pass "+opts.RequirePass)
	}
	s := &Sentinel{opts: opts}
	if opts.TLS != nil {
		tlsLines, tc, err := tlsServer(opts.TLS, name, ip, port, "")
		if err != nil {
			return nil, err
		}
		lines, s.TLS = append(lines, tlsLines...), tc
	}
	for _, m := range opts.Monitors {
		kv, err := s.settings(m)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		lines = append(lines, "sentinel monitor "+m.Name+" "+kv[1])
		for i := 2; i < len(kv); i += 2 {
			lines = append(lines, "sentinel "+kv[i]+" "+m.Name+" "+kv[i+1])
		}
	}
	conf := filepath.Join(dir, "sentinel.conf")
	if err := writeLines(conf, append(lines, opts.Extra...)); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	s.Process, err = c.Start(ProcessSpec{
		Name: name, Argv: []string{"redis-sentinel", conf}, IP: ip, Ports: []int{port},
		Ready: func(ctx context.Context) error { return ping(ctx, addr, opts.RequirePass, s.TLS) },
	})
	return s, err
}

// settings lists m's Sentinel settings as key/value pairs, "monitor" first
// (value "ip port quorum"), in the order of the config file and SENTINEL SET.
func (s *Sentinel) settings(m Monitor) ([]string, error) {
	host, port, err := net.SplitHostPort(m.Master)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: master %q: %w", m.Name, m.Master, err)
	}
	if m.Quorum <= 0 {
		m.Quorum = 2
	}
	kv := []string{
		"monitor", fmt.Sprintf("%s %s %d", host, port, m.Quorum),
		"down-after-milliseconds", strconv.FormatInt(s.opts.DownAfter.Milliseconds(), 10),
		"failover-timeout", strconv.FormatInt(s.opts.FailoverTimeout.Milliseconds(), 10),
		"parallel-syncs", strconv.Itoa(s.opts.ParallelSyncs),
	}
	if s.opts.Password != "" {
		kv = append(kv, "auth-pass", s.opts.Password)
	}
	return kv, nil
}

// Client returns a new fail-fast Sentinel client; close it.
func (s *Sentinel) Client() *redis.SentinelClient {
	return redis.NewSentinelClient(withTLS(clientOptions(s.Addr(), s.opts.RequirePass), s.TLS))
}

// Monitor makes the running Sentinel watch one more master (SENTINEL MONITOR,
// then SENTINEL SET with this Sentinel's timings).
func (s *Sentinel) Monitor(ctx context.Context, m Monitor) error {
	kv, err := s.settings(m)
	if err != nil {
		return err
	}
	cl := s.Client()
	defer cl.Close()
	f := strings.Fields(kv[1])
	if err := cl.Monitor(ctx, m.Name, f[0], f[1], f[2]).Err(); err != nil {
		return fmt.Errorf("SENTINEL MONITOR %s on %s: %w", m.Name, s.Name(), err)
	}
	for i := 2; i < len(kv); i += 2 {
		if err := cl.Set(ctx, m.Name, kv[i], kv[i+1]).Err(); err != nil {
			return fmt.Errorf("SENTINEL SET %s %s on %s: %w", m.Name, kv[i], s.Name(), err)
		}
	}
	return nil
}

// MasterAddr asks this Sentinel for the master of name (get-master-addr-by-name).
func (s *Sentinel) MasterAddr(ctx context.Context, name string) (string, error) {
	cl := s.Client()
	defer cl.Close()
	hp, err := cl.GetMasterAddrByName(ctx, name).Result()
	if err != nil {
		return "", fmt.Errorf("get-master-addr-by-name %s on %s: %w", name, s.Name(), err)
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("get-master-addr-by-name %s on %s: reply %q", name, s.Name(), hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// Master returns SENTINEL MASTER name as a map (num-slaves, flags, ...).
func (s *Sentinel) Master(ctx context.Context, name string) (map[string]string, error) {
	cl := s.Client()
	defer cl.Close()
	m, err := cl.Master(ctx, name).Result()
	if err != nil {
		return nil, fmt.Errorf("SENTINEL MASTER %s on %s: %w", name, s.Name(), err)
	}
	return m, nil
}

// Replicas returns SENTINEL REPLICAS name: one map per replica (ip, port, flags, ...).
func (s *Sentinel) Replicas(ctx context.Context, name string) ([]map[string]string, error) {
	cl := s.Client()
	defer cl.Close()
	r, err := cl.Replicas(ctx, name).Result()
	if err != nil {
		return nil, fmt.Errorf("SENTINEL REPLICAS %s on %s: %w", name, s.Name(), err)
	}
	return r, nil
}

// Peers returns SENTINEL SENTINELS name: one map per other Sentinel it knows.
func (s *Sentinel) Peers(ctx context.Context, name string) ([]map[string]string, error) {
	cl := s.Client()
	defer cl.Close()
	r, err := cl.Sentinels(ctx, name).Result()
	if err != nil {
		return nil, fmt.Errorf("SENTINEL SENTINELS %s on %s: %w", name, s.Name(), err)
	}
	return r, nil
}
