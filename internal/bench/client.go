package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// respConn is a plain RESP2 connection. twemproxy closes a connection that
// opens with HELLO, which go-redis sends, so clients of a pool speak RESP by
// hand.
type respConn struct {
	conn net.Conn
	rd   *bufio.Reader
	addr string
}

func dialRESP(ctx context.Context, addr string, timeout time.Duration) (*respConn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &respConn{conn: c, rd: bufio.NewReaderSize(c, 4096), addr: addr}, nil
}

func (c *respConn) Close() error { return c.conn.Close() }

// do sends one command and reads the reply line. Only simple replies are
// understood (+OK, -ERR, :n, $n bulk): enough for SET and GET.
func (c *respConn) do(timeout time.Duration, args ...string) (string, error) {
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 0, 64)
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(len(args)), 10)
	buf = append(buf, '\r', '\n')
	for _, a := range args {
		buf = append(buf, '$')
		buf = strconv.AppendInt(buf, int64(len(a)), 10)
		buf = append(buf, '\r', '\n')
		buf = append(buf, a...)
		buf = append(buf, '\r', '\n')
	}
	if _, err := c.conn.Write(buf); err != nil {
		return "", err
	}
	line, err := c.rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", replyError(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(c.rd, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// replyError is an error reply: the connection itself is still good.
type replyError string

func (e replyError) Error() string { return string(e) }

// write is one SET a client sent and what came of it.
type write struct {
	Key    string
	Target string // where the client sent it (pool or resolved master)
	Sent   time.Time
	Done   time.Time
	OK     bool
	Err    string
}

// writer is a client that writes a fresh key every interval, reconnecting
// (after resolving again, if it resolves) whenever the connection fails. It
// is what an application sees during a failover.
type writer struct {
	name     string
	interval time.Duration
	// target returns where to connect now: a fixed pool address, or the
	// master Consul DNS answers.
	target func(ctx context.Context) (string, error)
	// dropOnError reconnects (and resolves again) after an error reply
	// too: a client that follows a master by name must leave a node that
	// answers READONLY.
	dropOnError bool

	mu     sync.Mutex
	writes []write
}

func newWriter(name string, interval time.Duration, target func(ctx context.Context) (string, error)) *writer {
	return &writer{name: name, interval: interval, target: target}
}

// run writes until ctx ends or limit writes were attempted.
func (w *writer) run(ctx context.Context, limit int) {
	var c *respConn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for seq := 0; seq < limit; seq++ {
		if c == nil {
			addr, err := w.target(ctx)
			if err == nil && addr != "" {
				c, err = dialRESP(ctx, addr, 100*time.Millisecond)
			}
			if err != nil || addr == "" {
				if err != nil {
					w.mu.Lock()
					w.writes = append(w.writes, write{Target: addr, Sent: time.Now(), Done: time.Now(), Err: "connect: " + err.Error()})
					w.mu.Unlock()
				}
				c = nil
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				continue
			}
		}
		key := fmt.Sprintf("%s:%d", w.name, seq)
		wr := write{Key: key, Target: c.addr, Sent: time.Now()}
		_, err := c.do(500*time.Millisecond, "SET", key, strconv.Itoa(seq))
		wr.Done = time.Now()
		wr.OK = err == nil
		if err != nil {
			wr.Err = err.Error()
		}
		var re replyError
		if err != nil && (w.dropOnError || !errors.As(err, &re)) {
			c.Close()
			c = nil
		}
		w.mu.Lock()
		w.writes = append(w.writes, wr)
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// okSince returns the successful writes that completed at or after t, in
// order.
func (w *writer) okSince(t time.Time) []write {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []write
	for _, wr := range w.writes {
		if wr.OK && !wr.Done.Before(t) {
			out = append(out, wr)
		}
	}
	return out
}

// lastOKBefore is the last successful write that completed before t.
func (w *writer) lastOKBefore(t time.Time) (write, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.writes) - 1; i >= 0; i-- {
		if wr := w.writes[i]; wr.OK && wr.Done.Before(t) {
			return wr, true
		}
	}
	return write{}, false
}

// recentOK reports whether a write succeeded within d.
func (w *writer) recentOK(d time.Duration) bool {
	wr, ok := w.lastOKBefore(time.Now().Add(time.Nanosecond))
	return ok && time.Since(wr.Done) <= d
}

// errorsBetween summarizes the failed writes in [from, to): each distinct
// error with its count and first time.
func (w *writer) errorsBetween(from, to time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	type seen struct {
		n     int
		first time.Time
	}
	m := map[string]*seen{}
	var order []string
	for _, wr := range w.writes {
		if wr.OK || wr.Done.Before(from) || !wr.Done.Before(to) {
			continue
		}
		e := wr.Err
		if i := strings.LastIndex(e, ": "); i >= 0 && strings.HasPrefix(e, "connect: ") {
			e = "connect: " + e[i+2:]
		}
		if m[e] == nil {
			m[e] = &seen{first: wr.Done}
			order = append(order, e)
		}
		m[e].n++
	}
	var parts []string
	for _, e := range order {
		parts = append(parts, fmt.Sprintf("%d× %q from +%.1fms", m[e].n, e, ms(m[e].first.Sub(from))))
	}
	return strings.Join(parts, "; ")
}

// ackedKeys returns every key whose write was acknowledged.
func (w *writer) ackedKeys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, wr := range w.writes {
		if wr.OK {
			out = append(out, wr.Key)
		}
	}
	return out
}
