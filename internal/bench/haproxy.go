package bench

import (
	"context"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// FigHAProxy is figure 7: HAProxy driven by the agent next to HAProxy's own
// role check, in the same HAProxy, through the same kill -9 runs.
const FigHAProxy = "haproxy"

// firstAfter waits for a write sent at or after sentAfter (when the killed
// master was reaped: a reply already in flight from it does not count) and
// returns how long after t it was acknowledged.
func firstAfter(ctx context.Context, w *sandbox.AckWriter, t, sentAfter time.Time) (time.Duration, error) {
	a, err := w.FirstAck(ctx, "sent after the kill", func(a sandbox.Ack) bool { return !a.Sent.Before(sentAfter) })
	return a.At.Sub(t), err
}
