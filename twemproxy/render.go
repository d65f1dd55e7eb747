package twemproxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"sort"
	"strings"
	"text/template"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/proxytruth"
)

// Master is where the Sentinel truth says a master name lives, as both
// proxy drivers take it; this package does not depend on how the truth is
// established. The runner never acts on a Stale one: the file keeps what it
// has, and the pool's check warns.
type Master = proxytruth.Master

// TemplateMaster is a master as a template sees it.
type TemplateMaster struct {
	Name string
	Host string // as twemproxy wants it: IPv6 without brackets
	Port int
	Addr string // Host:Port, ready for "{{.Addr}}:1 {{.Name}}"
}

// TemplateData is what a user template is executed with.
type TemplateData struct {
	// Node is the agent's node name and Proxy the twemproxy entry's name.
	Node, Proxy string
	// Masters is the Sentinel truth by master name. A name the current
	// file uses is kept at its current address while the truth lacks it
	// or cannot confirm it, so a pool never loses a shard because the
	// Sentinels are unreachable; remove a shard by changing the template.
	Masters map[string]TemplateMaster
	// Pools are the pools of the file as it is now (nil when it is missing
	// or does not parse), so a template can keep listen addresses.
	Pools []Pool
}

// RenderOptions say where a proxy's config comes from.
type RenderOptions struct {
	Name       string // the twemproxy entry's name
	Node       string // the agent's node name
	ConfigFile string // the file nutcracker reads
	// Template is the path of a Go text/template; empty means the file is
	// edited in place (Edit).
	Template string
	// TemplateText is template content, e.g. the embedded default; it wins
	// over Template.
	TemplateText string
	// SameNode tells whether a server address of the file and a master
	// address of the truth name one node although written differently (an
	// IP and a host name); such a server keeps what the file has. nil:
	// compare as written (addr.Same).
	SameNode func(fileAddr, truthAddr string) bool
}

// Rendered is what a pipeline run would write.
type Rendered struct {
	Current []byte   // the file as it is (nil when missing)
	Desired []byte   // what it should be
	Changes []Change // servers whose address differs between the two
}

// Changed reports whether the file would be rewritten.
func (r Rendered) Changed() bool { return !bytes.Equal(r.Current, r.Desired) }

// Render computes the file the pipeline would write now for masters, without
// writing anything: the render command prints it, and every pipeline run
// starts with it.
func Render(o RenderOptions, masters map[string]Master) (Rendered, error) {
	cur, err := os.ReadFile(o.ConfigFile)
	if err != nil && !(errors.Is(err, fs.ErrNotExist) && (o.Template != "" || o.TemplateText != "")) {
		return Rendered{}, fmt.Errorf("read %s: %w", o.ConfigFile, err)
	}
	return renderFrom(o, cur, masters)
}

func renderFrom(o RenderOptions, cur []byte, masters map[string]Master) (Rendered, error) {
	running, agreed := serverAddrs(cur)
	masters = keepSameNodes(o.SameNode, masters, agreed)
	if o.Template == "" && o.TemplateText == "" {
		out, changes, err := Edit(cur, addrs(masters))
		if err != nil {
			return Rendered{}, fmt.Errorf("edit %s: %w", o.ConfigFile, err)
		}
		return Rendered{Current: cur, Desired: out, Changes: changes}, nil
	}
	text, name := o.TemplateText, "default"
	if text == "" {
		b, err := os.ReadFile(o.Template)
		if err != nil {
			return Rendered{}, fmt.Errorf("read template: %w", err)
		}
		text, name = string(b), o.Template
	}
	data := TemplateData{Node: o.Node, Proxy: o.Name, Masters: map[string]TemplateMaster{}}
	if cur != nil {
		data.Pools, _ = Pools(cur)
	}
	all := make(map[string]Master, len(masters)+len(running))
	for n, a := range running {
		// A name the file uses but the truth lacks (Sentinels unreachable,
		// a source that drops stale names) stays where it is: a pool must
		// never lose a shard, and its keys, by accident.
		all[n] = Master{Addr: a, Stale: true}
	}
	for n, m := range masters {
		if a, ok := running[n]; ok && m.Stale {
			// Not confirmed lately: keep what the proxy uses.
			m.Addr = a
		}
		all[n] = m
	}
	for n, m := range all {
		tm, err := templateMaster(n, m.Addr)
		if err != nil {
			return Rendered{}, fmt.Errorf("template %s: %w", name, err)
		}
		data.Masters[n] = tm
	}
	out, err := ExecuteTemplate(name, text, data)
	if err != nil {
		return Rendered{}, err
	}
	if cur != nil && bytes.Equal(cur, out) {
		out = cur
	}
	return Rendered{Current: cur, Desired: out, Changes: diffServers(cur, out)}, nil
}

// serverAddrs maps the names of a config's servers to their addresses:
// last, the last server of each name; agreed, only the names whose servers
// all have one address. Both are nil when there is no config or it does not
// parse.
func serverAddrs(cur []byte) (last, agreed map[string]string) {
	if cur == nil {
		return nil, nil
	}
	pools, err := Pools(cur)
	if err != nil {
		return nil, nil
	}
	last, agreed = map[string]string{}, map[string]string{}
	split := map[string]bool{}
	for _, p := range pools {
		for _, s := range p.Servers {
			if s.Name == "" || s.Port == 0 {
				continue
			}
			if prev, ok := last[s.Name]; ok && prev != s.Addr() {
				split[s.Name] = true
			}
			last[s.Name] = s.Addr()
		}
	}
	for n, a := range last {
		if !split[n] {
			agreed[n] = a
		}
	}
	return last, agreed
}

// keepSameNodes returns masters with the address of each master that the
// file already names by another address of the same node replaced by the
// file's, so that neither Edit nor a template rewrites it. file holds the
// names whose servers agree on one address.
func keepSameNodes(same func(a, b string) bool, masters map[string]Master, file map[string]string) map[string]Master {
	if same == nil || len(file) == 0 {
		return masters
	}
	var out map[string]Master
	for n, m := range masters {
		a, ok := file[n]
		if !ok || m.Stale || addr.Same(a, m.Addr) || !same(a, m.Addr) {
			continue
		}
		if out == nil {
			out = maps.Clone(masters)
		}
		m.Addr = a
		out[n] = m
	}
	if out == nil {
		return masters
	}
	return out
}

// ExecuteTemplate runs a twemproxy config template. Besides the data it
// offers master NAME (the address, an error when Sentinel does not know the
// name, so nothing half-rendered is ever written), server NAME WEIGHT (a
// whole "host:port:weight name" entry), masterNames (sorted) and env KEY.
func ExecuteTemplate(name, text string, data TemplateData) ([]byte, error) {
	lookup := func(n string) (TemplateMaster, error) {
		m, ok := data.Masters[n]
		if !ok {
			return TemplateMaster{}, fmt.Errorf("no Sentinel truth for master %q", n)
		}
		return m, nil
	}
	funcs := template.FuncMap{
		"master": func(n string) (string, error) {
			m, err := lookup(n)
			return m.Addr, err
		},
		"server": func(n string, weight int) (string, error) {
			m, err := lookup(n)
			return fmt.Sprintf("%s:%d %s", m.Addr, weight, n), err
		},
		"masterNames": func() []string {
			names := make([]string, 0, len(data.Masters))
			for n := range data.Masters {
				names = append(names, n)
			}
			sort.Strings(names)
			return names
		},
		"env": os.Getenv,
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("execute template: %w", err)
	}
	return b.Bytes(), nil
}

func templateMaster(name, a string) (TemplateMaster, error) {
	tw, err := addr.Twemproxy(a)
	if err != nil {
		return TemplateMaster{}, fmt.Errorf("master %s: %w", name, err)
	}
	host, port, _ := addr.Split(a)
	return TemplateMaster{Name: name, Host: host, Port: port, Addr: tw}, nil
}

// addrs is the truth Edit acts on: stale masters are left out, so their
// servers keep the address they have.
func addrs(masters map[string]Master) map[string]string {
	out := make(map[string]string, len(masters))
	for n, m := range masters {
		if !m.Stale {
			out[n] = m.Addr
		}
	}
	return out
}

// diffServers lists the named servers whose address differs between two
// configs, for the log and the journal of a template run.
func diffServers(cur, out []byte) []Change {
	if cur == nil {
		return nil
	}
	before, err1 := Pools(cur)
	after, err2 := Pools(out)
	if err1 != nil || err2 != nil {
		return nil
	}
	old := map[string]string{}
	for _, p := range before {
		for _, s := range p.Servers {
			if s.Name != "" {
				old[p.Name+"\x00"+s.Name] = s.Addr()
			}
		}
	}
	var changes []Change
	for _, p := range after {
		for i, s := range p.Servers {
			if prev, ok := old[p.Name+"\x00"+s.Name]; ok && s.Name != "" && prev != s.Addr() {
				changes = append(changes, Change{Pool: p.Name, Index: i, Name: s.Name, From: prev, To: s.Addr()})
			}
		}
	}
	return changes
}

// sha returns the hex SHA-256 of b, the identity of a config in the status.
func sha(b []byte) string {
	if b == nil {
		return ""
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// describe lists changes for a log line or a journal entry, the first ten
// of a storm in full.
func describe(changes []Change) string {
	const show = 10
	var parts []string
	for i, c := range changes {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(changes)-show))
			break
		}
		parts = append(parts, c.String())
	}
	return strings.Join(parts, ", ")
}
