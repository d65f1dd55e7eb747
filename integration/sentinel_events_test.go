package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// sentinelEvent is a message the test's own subscription to one of a
// shard's Sentinels received.
type sentinelEvent struct {
	s   *sandbox.Sentinel
	ps  *redis.PubSub // the subscription to s; closed when the test ends
	msg *redis.Message
	at  time.Time // when it arrived
}

// firstSentinelEvent subscribes to channels on every Sentinel of shard and
// sends the first message that accept takes. accept runs as each message
// arrives, one at a time and no more once it took one, so it may record what
// other parts of the stack say at that moment.
func firstSentinelEvent(ctx context.Context, t *testing.T, shard *sandbox.Shard, accept func(sentinelEvent) bool, channels ...string) <-chan sentinelEvent {
	t.Helper()
	out := make(chan sentinelEvent, 1)
	var mu sync.Mutex
	taken := false
	for _, s := range shard.Sentinels {
		cl := redis.NewClient(&redis.Options{Addr: s.Addr(), Protocol: 2, DisableIdentity: true})
		t.Cleanup(func() { cl.Close() })
		ps := cl.Subscribe(ctx, channels...)
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("subscribe to %s: %v", s.Addr(), err)
		}
		t.Cleanup(func() { ps.Close() })
		go func() {
			for m := range ps.Channel() {
				ev := sentinelEvent{s: s, ps: ps, msg: m, at: time.Now()}
				mu.Lock()
				if !taken && accept(ev) {
					taken = true
					out <- ev
				}
				mu.Unlock()
			}
		}()
	}
	return out
}
