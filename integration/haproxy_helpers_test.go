package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The helpers of haproxy_test.go: a writer that records acknowledged keys,
// the counts on the final master, Sentinel failovers and replica links.

// hxSet sends SET on a raw connection and returns the reply's first word
// ("+OK", "-READONLY"), or "closed" once the connection is cut.
func hxSet(c net.Conn) string {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("SET hx:held 1\r\n")); err != nil {
		return "closed"
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "closed"
	}
	return strings.Fields(line + " ")[0]
}

// hxFailover asks a Sentinel for SENTINEL FAILOVER until one succeeds:
// Sentinel gives up a failover whose promotion exceeds failover-timeout and
// does not retry a requested one. It returns the new master and when the
// successful attempt was asked for.
func hxFailover(ctx context.Context, t *testing.T, shard *sandbox.Shard, old string) (string, time.Time, error) {
	sc := shard.Sentinels[0].Client()
	defer sc.Close()
	var err error
	for attempt := 1; attempt <= 4; attempt++ {
		asked := time.Now()
		if err = sandbox.Poll(ctx, "SENTINEL FAILOVER accepted", func(ctx context.Context) error {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return sc.Failover(qctx, shard.Name).Err()
		}); err != nil {
			return "", time.Time{}, err
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		var newAddr string
		newAddr, err = shard.WaitFailover(wctx, old)
		cancel()
		if err == nil {
			return newAddr, asked, nil
		}
		t.Logf("SENTINEL FAILOVER attempt %d did not complete: %v", attempt, err)
	}
	return "", time.Time{}, err
}

// hxWriter loops unique SETs through one address and records the
// acknowledged keys.
type hxWriter struct {
	name   string
	client *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	acked []hxAck
}

type hxAck struct {
	key string
	at  time.Time
}

func hxStartWriter(name, address string) *hxWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &hxWriter{
		name: name, cancel: cancel, done: make(chan struct{}),
		client: redis.NewClient(&redis.Options{
			// A client that reconnects every 20ms or so, as pools and
			// short-lived clients do: a new connection is where HAProxy
			// picks a server, so that is where a wrong one shows.
			Addr: address, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1, ConnMaxLifetime: 20 * time.Millisecond,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
		}),
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			key := fmt.Sprintf("hx:%s:%d", name, i)
			if err := w.client.Set(ctx, key, i, 0).Err(); err == nil {
				w.mu.Lock()
				w.acked = append(w.acked, hxAck{key: key, at: time.Now()})
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *hxWriter) stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
		w.client.Close()
	})
}

func (w *hxWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *hxWriter) keys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.acked))
	for i, a := range w.acked {
		out[i] = a.key
	}
	return out
}

func (w *hxWriter) waitAcked(ctx context.Context, n int) error {
	return sandbox.Poll(ctx, fmt.Sprintf("%d writes acknowledged through %s", n, w.name), func(context.Context) error {
		if c := w.count(); c < n {
			return fmt.Errorf("%d acknowledged", c)
		}
		return nil
	})
}

func (w *hxWriter) firstAckAfter(ctx context.Context, t time.Time) (hxAck, error) {
	var first hxAck
	err := sandbox.Poll(ctx, "a write acknowledged through "+w.name+" after "+t.Format("15:04:05.000"), func(context.Context) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, a := range w.acked {
			if a.at.After(t) {
				first = a
				return nil
			}
		}
		return errors.New("none yet")
	})
	return first, err
}

func hxExists(ctx context.Context, t *testing.T, address, key string) bool {
	t.Helper()
	c := sandbox.NewClient(address, "")
	defer c.Close()
	n, err := c.Exists(ctx, key).Result()
	if err != nil {
		t.Fatalf("EXISTS on %s: %v", address, err)
	}
	return n == 1
}

// hxMissing counts the keys that are not on the Redis at address.
func hxMissing(ctx context.Context, t *testing.T, address string, keys []string) int {
	t.Helper()
	c := sandbox.NewClient(address, "")
	defer c.Close()
	missing := 0
	for i := 0; i < len(keys); i += 500 {
		batch := keys[i:min(i+500, len(keys))]
		n, err := c.Exists(ctx, batch...).Result()
		if err != nil {
			t.Fatalf("EXISTS on %s: %v", address, err)
		}
		missing += len(batch) - int(n)
	}
	return missing
}

// hxWaitLinked waits until r is a linked replica of the master a Sentinel
// majority names, and returns that master.
func hxWaitLinked(ctx context.Context, shard *sandbox.Shard, r *sandbox.Redis) (string, error) {
	var master string
	err := sandbox.Poll(ctx, r.Name()+" a linked replica of the current master", func(ctx context.Context) error {
		var err error
		if master, err = shard.CurrentMaster(ctx); err != nil {
			return err
		}
		info, err := r.Info(ctx, "replication")
		if err != nil {
			return err
		}
		at := info["master_host"] + ":" + info["master_port"]
		if info["role"] != "slave" || !addr.Same(at, master) || info["master_link_status"] != "up" {
			return fmt.Errorf("role %s of %s, link %s; the Sentinels name %s", info["role"], at, info["master_link_status"], master)
		}
		return nil
	})
	return master, err
}
