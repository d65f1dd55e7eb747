package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// FigHAProxy is figure 7: HAProxy driven by the agent next to HAProxy's own
// role check, in the same HAProxy, through the same kill -9 runs.
const FigHAProxy = "haproxy"

// hxWriter writes unique keys through one frontend every millisecond on a
// connection it renews every ~20ms (a new connection is where HAProxy picks
// a server), and records the acknowledged ones.
type hxWriter struct {
	client *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	acked []string
	at    []time.Time // when each was acknowledged
	sent  []time.Time // when each was sent
}

var hxWriters int

func startHXWriter(addr string) *hxWriter {
	hxWriters++
	prefix := fmt.Sprintf("hx%d", hxWriters)
	ctx, cancel := context.WithCancel(context.Background())
	w := &hxWriter{
		cancel: cancel, done: make(chan struct{}),
		client: redis.NewClient(&redis.Options{
			Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1, ConnMaxLifetime: 20 * time.Millisecond,
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
				w.acked, w.at, w.sent = append(w.acked, key), append(w.at, time.Now()), append(w.sent, sent)
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
	return append([]string(nil), w.acked...)
}

// firstAfter waits for a write sent at or after sentAfter (when the killed
// master was reaped: a reply already in flight from it does not count) and
// returns how long after t it was acknowledged.
func (w *hxWriter) firstAfter(ctx context.Context, t, sentAfter time.Time) (time.Duration, error) {
	var d time.Duration
	err := sandbox.Poll(ctx, "a write acknowledged after the kill", func(context.Context) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for i, at := range w.at {
			if !w.sent[i].Before(sentAfter) {
				d = at.Sub(t)
				return nil
			}
		}
		return fmt.Errorf("none of %d yet", len(w.at))
	})
	return d, err
}
