package sandbox

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Ack is one write an AckWriter had acknowledged.
type Ack struct {
	Key      string
	Sent, At time.Time // when the SET was sent, and when its reply came
}

// AckWriter loops unique SETs through one address, one a millisecond, on a
// connection it renews every ~20ms (a new connection is where a proxy picks
// a server, so that is where a wrong one shows), and records the
// acknowledged keys.
type AckWriter struct {
	name   string
	client *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	acked []Ack
}

// ackWriters makes each writer's keys unique in the process, so that a key
// an earlier writer left behind never counts for a later one.
var ackWriters atomic.Int64

// StartAckWriter starts writing through address; name is in its keys and
// its wait messages. Stop ends it.
func StartAckWriter(name, address string) *AckWriter {
	prefix := fmt.Sprintf("hx:%s:%d", name, ackWriters.Add(1))
	ctx, cancel := context.WithCancel(context.Background())
	w := &AckWriter{
		name: name, cancel: cancel, done: make(chan struct{}),
		client: redis.NewClient(&redis.Options{
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
			key := fmt.Sprintf("%s:%d", prefix, i)
			sent := time.Now()
			if w.client.Set(ctx, key, i, 0).Err() == nil {
				w.mu.Lock()
				w.acked = append(w.acked, Ack{Key: key, Sent: sent, At: time.Now()})
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// Stop ends the writes and closes the client; it may be called again.
func (w *AckWriter) Stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
		w.client.Close()
	})
}

// Count is how many writes were acknowledged so far.
func (w *AckWriter) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// Keys are the acknowledged keys, oldest first.
func (w *AckWriter) Keys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.acked))
	for i, a := range w.acked {
		out[i] = a.Key
	}
	return out
}

// WaitAcked waits until n writes in all were acknowledged.
func (w *AckWriter) WaitAcked(ctx context.Context, n int) error {
	return Poll(ctx, fmt.Sprintf("%d writes acknowledged through %s", n, w.name), func(context.Context) error {
		if c := w.Count(); c < n {
			return fmt.Errorf("%d acknowledged", c)
		}
		return nil
	})
}

// FirstAck waits for the oldest acknowledged write that match accepts; what
// says which one, for the error.
func (w *AckWriter) FirstAck(ctx context.Context, what string, match func(Ack) bool) (Ack, error) {
	var first Ack
	err := Poll(ctx, "a write acknowledged through "+w.name+" "+what, func(context.Context) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, a := range w.acked {
			if match(a) {
				first = a
				return nil
			}
		}
		return fmt.Errorf("none of %d yet", len(w.acked))
	})
	return first, err
}
