// Package sandbox starts real Consul, Redis, Sentinel and twemproxy processes
// on loopback, each on its own 127.x.y.z "host": the stack of the demo command,
// the benchmark and the integration tests (integration/harness adapts it to Go
// tests). It imports no test code.
package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configure a Cluster.
type Options struct {
	// Dir is the base directory; every process gets a subdirectory for its
	// config, data and log. Empty means a new directory under os.TempDir.
	Dir string
	// StartTimeout bounds each wait for readiness (default 30s).
	StartTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL (default 10s).
	StopTimeout time.Duration
	// AgentBin is the redis-consul-agent binary StartAgent runs when it is
	// given none: the demo passes its own executable, the integration tests
	// the binary make built.
	AgentBin string
}

// Cluster owns every process it started and tears them all down on Close.
// Its methods are safe for concurrent use.
type Cluster struct {
	dir  string
	opts Options

	mu     sync.Mutex
	procs  []*Process
	names  map[string]bool
	counts map[string]int
	closed bool
	// closers release what is not a process (links), newest first.
	closers []func()
}

// New creates a Cluster rooted at opts.Dir. It starts nothing.
func New(opts Options) (*Cluster, error) {
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "rca-harness-")
		if err != nil {
			return nil, fmt.Errorf("create cluster dir: %w", err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cluster dir: %w", err)
	}
	return &Cluster{dir: dir, opts: opts, names: map[string]bool{}, counts: map[string]int{}}, nil
}

// Dir is the cluster's base directory.
func (c *Cluster) Dir() string { return c.dir }

// NewIP hands out a loopback address no other process of this cluster (or of
// this test binary) uses: one "host".
func (c *Cluster) NewIP() string { return allocIP() }

// FreePort returns a TCP (and UDP) port that is free on ip and not handed out
// before by this test binary. Ports come from below the kernel's ephemeral range
// so outgoing connections cannot take them before the process binds.
func (c *Cluster) FreePort(ip string) (int, error) { return allocPort(ip) }

// ProcessDir creates and returns the directory of the process called name, so a
// caller can write its config before StartProcess.
func (c *Cluster) ProcessDir(name string) (string, error) {
	d := filepath.Join(c.dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("create dir for %s: %w", name, err)
	}
	return d, nil
}

// nextName returns kind-1, kind-2, ... unique within the cluster.
func (c *Cluster) nextName(kind string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		c.counts[kind]++
		n := fmt.Sprintf("%s-%d", kind, c.counts[kind])
		if !c.names[n] {
			return n
		}
	}
}

// ProcessSpec describes a process for Start.
type ProcessSpec struct {
	Name  string   // unique within the cluster; names the directory and log
	Argv  []string // argv[0] is looked up like the other binaries (see Binary)
	Env   []string // added to the harness's environment
	IP    string   // the "host" it listens on, if any
	Ports []int    // TCP ports it listens on; Ports[0] is the main one; checked free before a restart
	// UDPPorts are checked free before a restart as well.
	UDPPorts []int
	// Ready reports nil once the process serves; polled until StartTimeout.
	Ready func(ctx context.Context) error
}

// StartProcess starts any binary under the cluster's supervision, with its
// output captured in its log, and waits until ready (nil: no wait) returns nil.
func (c *Cluster) StartProcess(name string, argv []string, env []string, ready func(ctx context.Context) error) (*Process, error) {
	return c.Start(ProcessSpec{Name: name, Argv: argv, Env: env, Ready: ready})
}

// Start starts the process spec describes and waits until it is ready.
func (c *Cluster) Start(spec ProcessSpec) (*Process, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("start %s: empty argv", spec.Name)
	}
	bin, err := Binary(spec.Argv[0])
	if err != nil {
		return nil, err
	}
	dir, err := c.ProcessDir(spec.Name)
	if err != nil {
		return nil, err
	}
	p := &Process{
		c: c, name: spec.Name, dir: dir, logPath: filepath.Join(dir, spec.Name+".log"),
		argv: append([]string{bin}, spec.Argv[1:]...), env: spec.Env,
		ip: spec.IP, ports: spec.Ports, udpPorts: spec.UDPPorts, ready: spec.Ready,
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return nil, fmt.Errorf("start %s: cluster closed", spec.Name)
	case c.names[spec.Name]:
		c.mu.Unlock()
		return nil, fmt.Errorf("start %s: name already used in this cluster", spec.Name)
	}
	c.names[spec.Name] = true
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	if err := p.start(); err != nil {
		return nil, err
	}
	if err := p.waitReady(); err != nil {
		return nil, err
	}
	return p, nil
}

// Processes lists every process the cluster started, in start order.
func (c *Cluster) Processes() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Process(nil), c.procs...)
}

// Close kills every process the cluster started (and their process groups) and
// waits for them. It is idempotent and leaves the directory in place.
func (c *Cluster) Close() error {
	c.mu.Lock()
	c.closed = true
	procs := append([]*Process(nil), c.procs...)
	closers := c.closers
	c.closers = nil
	c.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].teardown()
	}
	return nil
}

// onClose runs f when the cluster closes, before its processes stop.
func (c *Cluster) onClose(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closers = append(c.closers, f)
}

// DumpLogs writes the last lines of every process log, each under a header.
func (c *Cluster) DumpLogs(w io.Writer) {
	for _, p := range c.Processes() {
		state := "running"
		if !p.Alive() {
			state = "exited"
		}
		fmt.Fprintf(w, "==> %s (%s, %s) %s <==\n", p.name, p.Addr(), state, p.logPath)
		fmt.Fprintln(w, tail(p.logPath, 200))
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// Binary finds an executable: env RCA_<NAME>_BIN (e.g. RCA_CONSUL_BIN,
// RCA_REDIS_SERVER_BIN), then for consul the cache that `make deps` fills, then
// PATH, /usr/sbin and /usr/local/sbin. Paths containing a slash are used as is.
func Binary(name string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("binary %s: %w", name, err)
		}
		return name, nil
	}
	env := "RCA_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name)) + "_BIN"
	if v := os.Getenv(env); v != "" {
		if _, err := os.Stat(v); err != nil {
			return "", fmt.Errorf("binary %s from $%s: %w (fix $%s or unset it and run `make deps`)", name, env, err, env)
		}
		return v, nil
	}
	var candidates []string
	if name == "consul" {
		candidates = append(candidates, filepath.Join(cacheDir(), "bin", "consul"))
	}
	if p, err := exec.LookPath(name); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/sbin/"+name, "/usr/local/sbin/"+name)
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("binary %q not found ($%s, PATH, %s): run `make deps` (integration/scripts/deps.sh) to install it",
		name, env, filepath.Join(cacheDir(), "bin"))
}

// CheckBinaries reports every real component that is missing, in one error.
func CheckBinaries() error {
	var errs []error
	for _, b := range []string{"consul", "redis-server", "redis-sentinel", "nutcracker"} {
		if _, err := Binary(b); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cacheDir mirrors integration/scripts/deps.sh.
func cacheDir() string {
	if d := os.Getenv("RCA_CACHE_DIR"); d != "" {
		return d
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "redis-consul-agent")
}

// poll calls f every interval until it returns nil or ctx ends; the error then
// names what was awaited and f's last error.
func poll(ctx context.Context, what string, f func(ctx context.Context) error) error {
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Poll calls f every 25ms until it returns nil or ctx ends, for tests that wait
// on a condition of their own.
func Poll(ctx context.Context, what string, f func(ctx context.Context) error) error {
	return poll(ctx, what, f)
}

// parseInfo turns an INFO reply into a map.
func parseInfo(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewBufferString(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// signalGroup sends sig to the process group led by pid, ignoring a gone group.
func signalGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}
