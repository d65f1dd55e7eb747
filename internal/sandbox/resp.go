package sandbox

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewClient returns a go-redis client for a Redis or Sentinel at addr that fails
// fast (short timeouts, no retries), for callers that poll.
func NewClient(addr, password string) *redis.Client {
	return redis.NewClient(clientOptions(addr, password))
}

func clientOptions(addr, password string) *redis.Options {
	return &redis.Options{
		Addr: addr, Password: password, Protocol: 2, DisableIdentity: true,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		MaxRetries: -1, PoolSize: 4,
	}
}

// RedisError is an error reply (-ERR ...) from the server.
type RedisError string

func (e RedisError) Error() string { return string(e) }

// Do sends one command over a fresh RESP2 connection and returns the reply:
// string, int64, nil, []any, or a RedisError. It exists because go-redis opens
// every connection with HELLO, on which twemproxy closes the connection; use it
// to talk to nutcracker pools.
func Do(ctx context.Context, addr string, args ...string) (any, error) {
	return DoTLS(ctx, addr, nil, args...)
}

// DoTLS is Do over TLS with tc (nil: plain TCP), for a TLS-only Redis or
// Sentinel (their handles' TLS field).
func DoTLS(ctx context.Context, addr string, tc *tls.Config, args ...string) (any, error) {
	var conn net.Conn
	var err error
	if tc != nil {
		d := tls.Dialer{Config: tc}
		conn, err = d.DialContext(ctx, "tcp", addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	buf := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		buf = fmt.Appendf(buf, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(buf); err != nil {
		return nil, fmt.Errorf("send to %s: %w", addr, err)
	}
	v, err := readReply(bufio.NewReader(conn))
	if err != nil && !errors.As(err, new(RedisError)) {
		return nil, fmt.Errorf("read from %s: %w", addr, err)
	}
	return v, err
}

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("bad reply line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return nil, RedisError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$', '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		if kind == '$' {
			b := make([]byte, n+2)
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, err
			}
			return string(b[:n]), nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil && !errors.As(err, new(RedisError)) {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("bad reply type %q", kind)
}
