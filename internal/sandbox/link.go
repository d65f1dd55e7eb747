package sandbox

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Link is a TCP forwarder to one target that a test can cut: every
// forwarded connection is dropped and new ones are refused, like a network
// partition between a client and a server that itself works on.
type Link struct {
	addr   string
	target string
	ln     net.Listener
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

// NewLink listens on a new host of the cluster and forwards to target. It
// is closed with the cluster.
func (c *Cluster) NewLink(target string) (*Link, error) {
	ip := c.NewIP()
	port, err := c.FreePort(ip)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	l := &Link{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	c.onClose(l.Close)
	go l.serve()
	return l, nil
}

// Addr is where clients connect instead of the target.
func (l *Link) Addr() string { return l.addr }

// Cut drops every forwarded connection and refuses new ones (true), or
// forwards again (false).
func (l *Link) Cut(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = on
	if on {
		for c := range l.conns {
			c.Close()
		}
		l.conns = map[net.Conn]bool{}
	}
}

// Close stops listening and drops every connection.
func (l *Link) Close() {
	l.ln.Close()
	l.Cut(true)
}

func (l *Link) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.forward(in)
	}
}

func (l *Link) forward(in net.Conn) {
	l.mu.Lock()
	cut := l.cut
	l.mu.Unlock()
	if cut {
		in.Close()
		return
	}
	out, err := net.DialTimeout("tcp", l.target, time.Second)
	if err != nil {
		in.Close()
		return
	}
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	l.conns[in], l.conns[out] = true, true
	l.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
		l.mu.Lock()
		delete(l.conns, dst)
		delete(l.conns, src)
		l.mu.Unlock()
	}
	go pipe(in, out)
	pipe(out, in)
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers, for in-process
// loggers whose output a failing test prints.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tail returns the last n lines written.
func (b *SyncBuffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
