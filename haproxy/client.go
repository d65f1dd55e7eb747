package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Client talks to one HAProxy runtime API (a `stats socket ... level admin`),
// either a unix socket path or host:port.
//
// Every command uses its own connection in HAProxy's non-interactive mode:
// HAProxy answers and closes, so the end of the answer is the end of the
// stream and nothing has to parse a prompt. A restarted or reloaded HAProxy
// cannot leave a half-dead session behind, and a failed command affects only
// itself. A connect over a local socket costs well under a millisecond, and a
// failover needs four commands per server.
type Client struct {
	// Addr is the runtime API: a path (anything with a '/') or host:port.
	Addr string
	// Timeout bounds one command: connect, write and read (default 1s).
	Timeout time.Duration
}

// maxReply bounds what a command may answer; `show servers state` of a
// large HAProxy is a few hundred bytes per server.
const maxReply = 16 << 20

// Network is "unix" for a socket path and "tcp" for host:port.
func Network(runtimeAPI string) string {
	if strings.Contains(runtimeAPI, "/") {
		return "unix"
	}
	return "tcp"
}

// Do sends one command and returns HAProxy's answer without the empty line
// that ends it. The command must be a single line; it never goes through a
// shell.
func (c *Client) Do(ctx context.Context, cmd string) (string, error) {
	if strings.ContainsAny(cmd, "\n\r;") {
		return "", fmt.Errorf("haproxy command %q: newlines and ';' are not allowed", cmd)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, Network(c.Addr), c.Addr)
	if err != nil {
		return "", fmt.Errorf("connect to the runtime API %s: %w", c.Addr, err)
	}
	defer conn.Close()
	// The deadline covers a HAProxy that accepts but never answers; the
	// context's cancellation is honoured by closing the connection.
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("runtime API %s: send %q: %w", c.Addr, verb(cmd), err)
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxReply))
	if err != nil {
		return "", fmt.Errorf("runtime API %s: read the answer to %q: %w", c.Addr, verb(cmd), err)
	}
	return string(bytes.TrimRight(b, "\n")), nil
}

// verb is the command without its arguments, for error messages and metrics.
func verb(cmd string) string {
	f := strings.Fields(cmd)
	switch {
	case len(f) >= 4 && f[0] == "set" && f[1] == "server":
		return "set server " + f[3]
	case len(f) >= 3:
		return strings.Join(f[:3], " ")
	}
	return cmd
}

// ErrRefused is a command HAProxy understood the connection for but refused
// (an unknown backend, a bad address); the runtime API itself works.
var ErrRefused = errors.New("refused by HAProxy")

// ShowServersState reads the state of every server of every backend.
func (c *Client) ShowServersState(ctx context.Context) ([]ServerState, error) {
	out, err := c.Do(ctx, "show servers state")
	if err != nil {
		return nil, err
	}
	st, err := ParseServersState(out)
	if err != nil {
		return nil, fmt.Errorf("runtime API %s: show servers state: %w", c.Addr, err)
	}
	return st, nil
}

// SetAddr moves backend/server to host:port.
func (c *Client) SetAddr(ctx context.Context, backend, server, host string, port int) error {
	out, err := c.Do(ctx, fmt.Sprintf("set server %s/%s addr %s port %d", backend, server, host, port))
	if err != nil {
		return err
	}
	// HAProxy says what changed, or that nothing had to; anything else is
	// an error message ("No such server.", "Invalid addr ...").
	if strings.Contains(out, "changed from") || strings.Contains(out, "no need to change") {
		return nil
	}
	return fmt.Errorf("set server %s/%s addr %s port %d: %w: %s", backend, server, host, port, ErrRefused, firstLine(out))
}

// SetReady takes backend/server out of maintenance and drain.
func (c *Client) SetReady(ctx context.Context, backend, server string) error {
	return c.silent(ctx, fmt.Sprintf("set server %s/%s state ready", backend, server))
}

// HealthUp marks backend/server up until its next check says otherwise: the
// check's verdict was about the address the server had before.
func (c *Client) HealthUp(ctx context.Context, backend, server string) error {
	return c.silent(ctx, fmt.Sprintf("set server %s/%s health up", backend, server))
}

// ShutdownSessions closes every session open to backend/server.
func (c *Client) ShutdownSessions(ctx context.Context, backend, server string) error {
	return c.silent(ctx, fmt.Sprintf("shutdown sessions server %s/%s", backend, server))
}

// silent runs a command that answers nothing on success.
func (c *Client) silent(ctx context.Context, cmd string) error {
	out, err := c.Do(ctx, cmd)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("%s: %w: %s", cmd, ErrRefused, firstLine(out))
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
