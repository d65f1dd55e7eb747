package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"gopkg.in/yaml.v3"
)

// NutcrackerOptions configure one nutcracker (twemproxy). Give the pools either
// as ConfigYAML (written to <dir>/nutcracker.yml) or as an existing ConfigPath
// (kept, so an agent may rewrite it and Restart picks up the new file).
// Allocate the pools' listen addresses with Cluster.NewIP and FreePort.
type NutcrackerOptions struct {
	Name       string // default nutcracker-N
	ConfigYAML string
	ConfigPath string
	IP         string   // stats address host; default a new host
	StatsPort  int      // default a free port
	Args       []string // more arguments (never -d: the harness needs the foreground child)
}

// Nutcracker is a running nutcracker; Addr is its first pool's listen address.
type Nutcracker struct {
	*Process
	ConfigPath string
	Pools      []Pool // in file order
	StatsAddr  string
}

// Pool is one twemproxy pool of the config.
type Pool struct {
	Name   string
	Listen string // host:port
}

// StartNutcracker starts nutcracker in the foreground and waits until every
// pool's listen address accepts TCP.
func (c *Cluster) StartNutcracker(opts NutcrackerOptions) (*Nutcracker, error) {
	name := opts.Name
	if name == "" {
		name = c.nextName("nutcracker")
	}
	dir, err := c.ProcessDir(name)
	if err != nil {
		return nil, err
	}
	n := &Nutcracker{ConfigPath: opts.ConfigPath}
	if n.ConfigPath == "" {
		n.ConfigPath = filepath.Join(dir, "nutcracker.yml")
		if err := os.WriteFile(n.ConfigPath, []byte(opts.ConfigYAML), 0o644); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	if n.Pools, err = ReadPools(n.ConfigPath); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if len(n.Pools) == 0 {
		return nil, fmt.Errorf("start %s: no pools in %s", name, n.ConfigPath)
	}
	ip := opts.IP
	if ip == "" {
		ip = c.NewIP()
	}
	if opts.StatsPort == 0 {
		if opts.StatsPort, err = c.FreePort(ip); err != nil {
			return nil, err
		}
	}
	n.StatsAddr = net.JoinHostPort(ip, strconv.Itoa(opts.StatsPort))
	// The handle's host and ports are the first pool's, then the other pools'
	// and the stats port (all checked free before a restart).
	host, port, err := splitAddr(n.Pools[0].Listen)
	if err != nil {
		return nil, fmt.Errorf("start %s: pool %s: %w", name, n.Pools[0].Name, err)
	}
	ports := []int{port}
	for _, p := range n.Pools[1:] {
		if h, pp, err := splitAddr(p.Listen); err == nil && h == host {
			ports = append(ports, pp)
		}
	}
	if ip == host {
		ports = append(ports, opts.StatsPort)
	}
	argv := append([]string{"nutcracker", "-c", n.ConfigPath, "-s", strconv.Itoa(opts.StatsPort), "-a", ip}, opts.Args...)
	n.Process, err = c.Start(ProcessSpec{
		Name: name, Argv: argv, IP: host, Ports: ports,
		Ready: func(ctx context.Context) error {
			for _, p := range n.Pools {
				if err := dialTCP(ctx, p.Listen); err != nil {
					return fmt.Errorf("pool %s: %w", p.Name, err)
				}
			}
			return dialTCP(ctx, n.StatsAddr)
		},
	})
	return n, err
}

// ReadPools lists the pools of a twemproxy config in file order.
func ReadPools(path string) ([]Pool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pools: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("parse %s: not a mapping of pools", path)
	}
	var pools []Pool
	m := doc.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		var body struct {
			Listen string `yaml:"listen"`
		}
		if err := m[i+1].Decode(&body); err != nil {
			return nil, fmt.Errorf("parse %s: pool %s: %w", path, m[i].Value, err)
		}
		pools = append(pools, Pool{Name: m[i].Value, Listen: body.Listen})
	}
	return pools, nil
}

func splitAddr(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}
