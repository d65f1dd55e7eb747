package twemproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// Pool is one server pool of a twemproxy config: where it listens and the
// servers it shards over. The runner probes and registers pools, and compares
// their servers with the Sentinel truth.
type Pool struct {
	Name string
	// Listen is the listen value as written: "host:port" or a unix socket
	// path, optionally followed by permissions.
	Listen string
	// Redis is false for memcached pools, which are probed by connecting only.
	Redis   bool
	Servers []Server
	// auth is redis_auth: twemproxy asks clients for it, so the probe sends
	// it before PING. Never logged or serialized.
	auth string
}

// Server is one entry of a pool's servers list, "host:port:weight [name]"
// (or "/unix/socket:weight [name]"). The name is what ties a server to a
// Sentinel master name.
type Server struct {
	Host   string // IP, hostname or unix socket path
	Port   int    // 0 for a unix socket
	Weight int
	Name   string
}

// Addr is the server's address in the form the Sentinel truth uses
// ("host:port", IPv6 in brackets), so the two compare as strings.
func (s Server) Addr() string {
	if s.Port == 0 {
		return s.Host
	}
	return net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// ListenNetwork returns the network and address to dial the pool's listener:
// tcp host:port (an unspecified host is dialled on loopback) or unix path.
func (p Pool) ListenNetwork() (network, address string, err error) {
	l := strings.TrimSpace(p.Listen)
	if strings.HasPrefix(l, "/") {
		path, _, _ := strings.Cut(l, " ")
		return "unix", path, nil
	}
	host, port, err := addr.Split(l)
	if err != nil {
		return "", "", fmt.Errorf("pool %q: listen %q: %w", p.Name, p.Listen, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	return "tcp", net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// ListenHostPort splits a TCP listen address; ok is false for unix sockets.
func (p Pool) ListenHostPort() (host string, port int, ok bool) {
	h, pt, err := addr.Split(strings.TrimSpace(p.Listen))
	if err != nil || strings.HasPrefix(strings.TrimSpace(p.Listen), "/") {
		return "", 0, false
	}
	return h, pt, true
}

// Pools parses a twemproxy config and returns its pools in file order. It
// checks what the agent relies on (a mapping of pools, each with listen and
// a list of well-formed servers); nutcracker --test-conf checks the rest.
func Pools(src []byte) ([]Pool, error) {
	doc, err := parseDoc(src)
	if err != nil {
		return nil, err
	}
	entries, err := poolEntries(doc)
	if err != nil {
		return nil, err
	}
	pools := make([]Pool, 0, len(entries))
	for _, e := range entries {
		p := Pool{Name: e.name}
		if n := lookup(e.val, "listen"); n != nil {
			if n.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("pool %q: listen: want \"host:port\" or a socket path (line %d)", e.name, n.Line)
			}
			p.Listen = n.Value
		} else {
			return nil, fmt.Errorf("pool %q: listen is missing", e.name)
		}
		if n := lookup(e.val, "redis"); n != nil && n.Kind == yaml.ScalarNode {
			p.Redis = n.Value == "true"
		}
		if n := lookup(e.val, "redis_auth"); n != nil && n.Kind == yaml.ScalarNode {
			p.auth = n.Value
		}
		items, err := serverNodes(e)
		if err != nil {
			return nil, err
		}
		for i, it := range items {
			s, _, err := parseServerNode(e.name, i, it)
			if err != nil {
				return nil, err
			}
			p.Servers = append(p.Servers, s)
		}
		pools = append(pools, p)
	}
	return pools, nil
}

// parseDoc decodes a twemproxy config into a yaml node tree and returns the
// top-level mapping. Like nutcracker, it accepts exactly one document.
func parseDoc(src []byte) (*yaml.Node, error) {
	if bytes.HasPrefix(src, []byte{0xFE, 0xFF}) || bytes.HasPrefix(src, []byte{0xFF, 0xFE}) {
		return nil, errors.New("config is UTF-16: want UTF-8")
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty: want a mapping of pool names")
		}
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("parse yaml: %w", err)
		}
		return nil, fmt.Errorf("config has more than one yaml document (line %d): nutcracker reads exactly one", extra.Line)
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = resolve(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config (line %d): want a mapping of pool names at the top level", root.Line)
	}
	return root, nil
}

// poolEntry is one top-level key and its (alias-resolved) mapping.
type poolEntry struct {
	name string
	val  *yaml.Node
}

func poolEntries(root *yaml.Node) ([]poolEntry, error) {
	var out []poolEntry
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := resolve(root.Content[i]), resolve(root.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config (line %d): pool names must be strings", k.Line)
		}
		if seen[k.Value] {
			return nil, fmt.Errorf("pool %q (line %d): defined twice", k.Value, k.Line)
		}
		seen[k.Value] = true
		if v.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("pool %q (line %d): want a mapping of settings", k.Value, v.Line)
		}
		out = append(out, poolEntry{name: k.Value, val: v})
	}
	return out, nil
}

// serverNodes returns the (alias-resolved) items of a pool's servers list.
func serverNodes(e poolEntry) ([]*yaml.Node, error) {
	n := lookup(e.val, "servers")
	if n == nil {
		return nil, fmt.Errorf("pool %q: servers is missing", e.name)
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("pool %q: servers (line %d): want a list of \"host:port:weight [name]\"", e.name, n.Line)
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		items[i] = resolve(it)
	}
	return items, nil
}

func parseServerNode(pool string, i int, n *yaml.Node) (Server, serverSpan, error) {
	if n.Kind != yaml.ScalarNode {
		return Server{}, serverSpan{}, fmt.Errorf("pool %q: server %d (line %d): want a string \"host:port:weight [name]\"", pool, i+1, n.Line)
	}
	s, span, err := parseServer(n.Value)
	if err != nil {
		return Server{}, serverSpan{}, fmt.Errorf("pool %q: server %d %q (line %d): %w", pool, i+1, n.Value, n.Line, err)
	}
	return s, span, nil
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// lookup returns the value of key in mapping m, following aliases and merge
// keys (<<) the way a YAML decoder does: the mapping's own keys win, then the
// merged mappings in order.
func lookup(m *yaml.Node, key string) *yaml.Node {
	return lookupDepth(m, key, 0)
}

func lookupDepth(m *yaml.Node, key string, depth int) *yaml.Node {
	m = resolve(m)
	if m == nil || m.Kind != yaml.MappingNode || depth > 16 {
		return nil
	}
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "!!merge" || k.Tag == "") {
			merges = append(merges, m.Content[i+1])
			continue
		}
		if k.Kind == yaml.ScalarNode && k.Value == key {
			return resolve(m.Content[i+1])
		}
	}
	for _, mv := range merges {
		mv = resolve(mv)
		switch mv.Kind {
		case yaml.MappingNode:
			if v := lookupDepth(mv, key, depth+1); v != nil {
				return v
			}
		case yaml.SequenceNode:
			for _, item := range mv.Content {
				if v := lookupDepth(item, key, depth+1); v != nil {
					return v
				}
			}
		}
	}
	return nil
}

// serverSpan locates the host:port part inside a server value.
type serverSpan struct {
	start, end int
}

// errServerForm is the shape every malformed server entry is reported with.
var errServerForm = errors.New(`want host:port:weight [name]`)

// parseServer parses "host:port:weight [name]" the way nutcracker does (from
// the end: name after the space, then weight, then port; the rest is the
// host), and returns where host:port sits in v so Edit can replace exactly
// that.
func parseServer(v string) (Server, serverSpan, error) {
	body := strings.TrimSpace(v)
	lead := strings.Index(v, body)
	first, name, _ := strings.Cut(body, " ")
	name = strings.TrimSpace(name)
	if strings.ContainsAny(name, " \t\r\n") {
		return Server{}, serverSpan{}, fmt.Errorf("%w: the name must be one word", errServerForm)
	}
	if strings.ContainsAny(first, "\t\r\n") {
		return Server{}, serverSpan{}, errServerForm
	}
	wi := strings.LastIndexByte(first, ':')
	if wi <= 0 {
		return Server{}, serverSpan{}, errServerForm
	}
	weight, err := strconv.Atoi(first[wi+1:])
	if err != nil || weight < 0 {
		return Server{}, serverSpan{}, fmt.Errorf("%w: weight %q is not a number", errServerForm, first[wi+1:])
	}
	hp := first[:wi]
	s := Server{Weight: weight, Name: name}
	if strings.HasPrefix(hp, "/") {
		s.Host = hp
	} else {
		host, port, err := addr.Split(hp)
		if err != nil {
			return Server{}, serverSpan{}, fmt.Errorf("%w: %v", errServerForm, err)
		}
		s.Host, s.Port = host, port
	}
	return s, serverSpan{start: lead, end: lead + len(hp)}, nil
}
