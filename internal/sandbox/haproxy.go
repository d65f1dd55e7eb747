package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// HAProxyOptions configure one HAProxy in `mode tcp`: a frontend per
// backend on its own port of one new host, and a runtime API socket with
// `level admin` that an agent can drive.
type HAProxyOptions struct {
	Name     string // default haproxy-N
	Backends []HAProxyBackend
}

// HAProxyBackend is one backend and the frontend that sends to it.
type HAProxyBackend struct {
	Name    string
	Servers []HAProxyServer
	// RoleCheck is the classic recipe: tcp-check `role:master` on every
	// server with inter Inter, fall 1, rise 1, so HAProxy picks the master
	// itself. Otherwise Check adds a plain TCP liveness check at Inter.
	RoleCheck bool
	Check     bool
	Inter     time.Duration // default 100ms
	// Password is sent with AUTH by the role check.
	Password string
}

// HAProxyServer is one server line.
type HAProxyServer struct {
	Name string
	Addr string // ip:port
}

// HAProxy is a running haproxy.
type HAProxy struct {
	*Process
	ConfigPath string
	// Socket is the runtime API's unix socket path.
	Socket string
	// Frontends is the listen address of each backend's frontend.
	Frontends map[string]string
}

// StartHAProxy writes the config and starts haproxy in the foreground (-db),
// ready once the runtime API answers and every frontend accepts TCP. A
// Restart starts it with the same file, so servers the agent moved through
// the runtime API are back at their configured addresses.
func (c *Cluster) StartHAProxy(opts HAProxyOptions) (*HAProxy, error) {
	name := opts.Name
	if name == "" {
		name = c.nextName("haproxy")
	}
	dir, err := c.ProcessDir(name)
	if err != nil {
		return nil, err
	}
	ip := c.NewIP()
	h := &HAProxy{ConfigPath: filepath.Join(dir, "haproxy.cfg"), Socket: filepath.Join(dir, "admin.sock"), Frontends: map[string]string{}}
	if len(h.Socket) > 100 {
		return nil, fmt.Errorf("start %s: socket path %s is too long for a unix socket", name, h.Socket)
	}
	var ports []int
	var b strings.Builder
	fmt.Fprintf(&b, "global\n  maxconn 2000\n  stats socket %s level admin\n  stats timeout 10s\n", h.Socket)
	b.WriteString("defaults\n  mode tcp\n  timeout connect 500ms\n  timeout client 60s\n  timeout server 60s\n  timeout check 500ms\n")
	for _, be := range opts.Backends {
		port, err := c.FreePort(ip)
		if err != nil {
			return nil, err
		}
		ports = append(ports, port)
		listen := net.JoinHostPort(ip, strconv.Itoa(port))
		h.Frontends[be.Name] = listen
		fmt.Fprintf(&b, "frontend fe-%s\n  bind %s\n  default_backend %s\n", be.Name, listen, be.Name)
		b.WriteString(backendConfig(be))
	}
	if err := os.WriteFile(h.ConfigPath, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	h.Process, err = c.Start(ProcessSpec{
		Name: name, Argv: []string{"haproxy", "-db", "-f", h.ConfigPath}, IP: ip, Ports: ports,
		Ready: func(ctx context.Context) error {
			if err := h.runtimeReady(ctx); err != nil {
				return err
			}
			for be, a := range h.Frontends {
				if err := dialTCP(ctx, a); err != nil {
					return fmt.Errorf("frontend of %s: %w", be, err)
				}
			}
			return nil
		},
	})
	return h, err
}

func backendConfig(be HAProxyBackend) string {
	inter := be.Inter
	if inter <= 0 {
		inter = 100 * time.Millisecond
	}
	var b strings.Builder
	fmt.Fprintf(&b, "backend %s\n", be.Name)
	check := ""
	switch {
	case be.RoleCheck:
		b.WriteString("  option tcp-check\n  tcp-check connect\n")
		if be.Password != "" {
			fmt.Fprintf(&b, "  tcp-check send AUTH\\ %s\\r\\n\n  tcp-check expect string +OK\n", be.Password)
		}
		b.WriteString("  tcp-check send PING\\r\\n\n  tcp-check expect string +PONG\n" +
			"  tcp-check send info\\ replication\\r\\n\n  tcp-check expect string role:master\n" +
			"  tcp-check send QUIT\\r\\n\n  tcp-check expect string +OK\n")
		check = fmt.Sprintf(" check inter %dms fall 1 rise 1", inter.Milliseconds())
	case be.Check:
		check = fmt.Sprintf(" check inter %dms fall 2 rise 1", inter.Milliseconds())
	}
	for _, s := range be.Servers {
		fmt.Fprintf(&b, "  server %s %s%s\n", s.Name, s.Addr, check)
	}
	return b.String()
}

// runtimeReady returns nil once the runtime API answers `show info`.
func (h *HAProxy) runtimeReady(ctx context.Context) error {
	out, err := h.Command(ctx, "show info")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Pid:") {
		return fmt.Errorf("show info answered %q", out)
	}
	return nil
}

// Command sends one runtime API command and returns the answer.
func (h *HAProxy) Command(ctx context.Context, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", h.Socket)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	if _, err := conn.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String(), nil
}

// HAProxyServerState is one line of `show servers state`.
type HAProxyServerState struct {
	Backend, Server string
	Addr            string // ip:port
	// OpState is srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping.
	OpState int
	// AdminState is srv_admin_state, a bit field: 0 is ready, any bit set
	// (maintenance, drain) keeps new traffic off the server.
	AdminState int
}

// TakesTraffic reports whether HAProxy sends new connections to the server:
// running and ready.
func (s HAProxyServerState) TakesTraffic() bool { return s.OpState == 2 && s.AdminState == 0 }

// Servers reads `show servers state`, columns found by the header's names.
func (h *HAProxy) Servers(ctx context.Context) ([]HAProxyServerState, error) {
	out, err := h.Command(ctx, "show servers state")
	if err != nil {
		return nil, err
	}
	return parseServersState(out)
}

func parseServersState(out string) ([]HAProxyServerState, error) {
	col := map[string]int{}
	var servers []HAProxyServerState
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && f[0] == "#":
			for i, name := range f[1:] {
				col[name] = i
			}
		case len(f) > 1 && len(col) > 0:
			get := func(name string) string {
				if i, ok := col[name]; ok && i < len(f) {
					return f[i]
				}
				return ""
			}
			op, _ := strconv.Atoi(get("srv_op_state"))
			admin, _ := strconv.Atoi(get("srv_admin_state"))
			servers = append(servers, HAProxyServerState{
				Backend: get("be_name"), Server: get("srv_name"), Addr: net.JoinHostPort(get("srv_addr"), get("srv_port")),
				OpState: op, AdminState: admin,
			})
		}
	}
	if len(col) == 0 {
		return nil, fmt.Errorf("show servers state answered %q", out)
	}
	return servers, nil
}

// ServerAddr returns the ip:port HAProxy holds for backend/server now, from
// `show servers state`.
func (h *HAProxy) ServerAddr(ctx context.Context, backend, server string) (string, error) {
	servers, err := h.Servers(ctx)
	if err != nil {
		return "", err
	}
	for _, s := range servers {
		if s.Backend == backend && s.Server == server {
			return s.Addr, nil
		}
	}
	return "", fmt.Errorf("no server %s/%s in show servers state", backend, server)
}

// HAProxySession is one session HAProxy has open to a server.
type HAProxySession struct {
	Backend, Server string
	// Addr is where the session's server connection goes (ip:port): the
	// server's address when the session connected, which a later `set
	// server addr` does not change.
	Addr string
}

// Sessions reads `show sess all` and returns the sessions connected to a
// server (the runtime API's own and those still waiting are left out).
func (h *HAProxy) Sessions(ctx context.Context) ([]HAProxySession, error) {
	out, err := h.Command(ctx, "show sess all")
	if err != nil {
		return nil, err
	}
	return parseSessions(out), nil
}

func parseSessions(out string) []HAProxySession {
	var sessions []HAProxySession
	backend := ""
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 1 && strings.HasPrefix(f[0], "backend="):
			backend = strings.TrimPrefix(f[0], "backend=")
		case len(f) >= 3 && strings.HasPrefix(f[0], "server=") && strings.HasPrefix(f[2], "addr="):
			// "server=alpha (id=1) addr=127.0.0.5:6379"
			server := strings.TrimPrefix(f[0], "server=")
			if server == "<NONE>" || backend == "" {
				continue
			}
			sessions = append(sessions, HAProxySession{Backend: backend, Server: server, Addr: strings.TrimPrefix(f[2], "addr=")})
		}
	}
	return sessions
}
