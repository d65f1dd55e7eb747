package twemproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Ping asks a pool's listener for PING through the proxy (AUTH first when
// the pool sets redis_auth, because twemproxy then refuses anything else) and
// returns nil on +PONG. A memcached pool is only connected to. timeout bounds
// the whole exchange.
func Ping(ctx context.Context, p Pool, timeout time.Duration) error {
	network, addr, err := p.ListenNetwork()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !p.Redis {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req := "*1\r\n$4\r\nPING\r\n"
	if p.auth != "" {
		req = fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(p.auth), p.auth) + req
	}
	if _, err := conn.Write([]byte(req)); err != nil {
		return fmt.Errorf("send PING: %w", err)
	}
	r := bufio.NewReader(conn)
	if p.auth != "" {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read AUTH reply: %w", err)
		}
		if !strings.HasPrefix(line, "+") {
			// The server's words, never the password.
			return fmt.Errorf("AUTH refused: %s", strings.TrimSpace(line))
		}
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read PING reply: %w", err)
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// probeInterval is how often a restarted proxy is tried: every 250µs while
// a fast restart is expected (a refused connect on loopback costs tens of
// microseconds, and the probe's answer is when the pipeline reports the
// change applied), then less eagerly.
func probeInterval(elapsed time.Duration) time.Duration {
	switch {
	case elapsed < 50*time.Millisecond:
		return 250 * time.Microsecond
	case elapsed < 100*time.Millisecond:
		return time.Millisecond
	case elapsed < time.Second:
		return 5 * time.Millisecond
	default:
		return 25 * time.Millisecond
	}
}

// errChildExited reports that the supervised child died while being probed.
var errChildExited = errors.New("nutcracker exited")

// waitPools probes every pool until all answer, until timeout, or until
// exited closes (the child died: no point waiting). It returns when the
// first and the last pool answered.
func waitPools(ctx context.Context, pools []Pool, timeout time.Duration, exited <-chan struct{}) (first, last time.Time, err error) {
	if len(pools) == 0 {
		now := time.Now()
		return now, now, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, p := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := waitPool(ctx, p, exited)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				cancel()
				return
			}
			if first.IsZero() || at.Before(first) {
				first = at
			}
			if at.After(last) {
				last = at
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return time.Time{}, time.Time{}, errs[0]
	}
	return first, last, nil
}

func waitPool(ctx context.Context, p Pool, exited <-chan struct{}) (time.Time, error) {
	start := time.Now()
	var lastErr error
	for {
		attempt := min(250*time.Millisecond, time.Until(deadlineOf(ctx)))
		if attempt > 0 {
			if lastErr = Ping(ctx, p, attempt); lastErr == nil {
				return time.Now(), nil
			}
		}
		t := time.NewTimer(probeInterval(time.Since(start)))
		select {
		case <-exited:
			t.Stop()
			return time.Time{}, errChildExited
		case <-ctx.Done():
			t.Stop()
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return time.Time{}, fmt.Errorf("pool %q at %s does not answer after %s: %w", p.Name, p.Listen, time.Since(start).Round(time.Millisecond), lastErr)
		case <-t.C:
		}
	}
}

func deadlineOf(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(time.Hour)
}
