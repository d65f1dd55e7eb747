package discovery

import (
	"context"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Pub/sub messages: parse each one, journal it once however many Sentinels
// publish it, and route it to the job it concerns.

// handleMessage acts on one pub/sub message: a +switch-master starts a
// ROLE confirmation at once; events that suggest the truth moved trigger a
// poll; every distinct event goes to the journal once.
func (m *Monitor) handleMessage(ctx context.Context, msg sentinelMsg) {
	e, err := ParseEvent(msg.channel, msg.payload)
	if err != nil {
		m.log.Warn("ignoring sentinel message", "sentinel", msg.from, "error", err)
		return
	}
	fresh := m.firstSeen(e, msg.at)
	if fresh {
		m.log.Debug("sentinel event", "sentinel", msg.from, "event", e.String())
		m.opts.Journal.Add(telemetry.Event{
			Time: msg.at, Kind: telemetry.KindSentinel, Type: e.Type, Subject: e.MasterName,
			Detail: e.Payload() + " (from " + msg.from + ")",
		})
	}
	if failoverEvents[e.Type] {
		// Every copy: +new-epoch payloads of two Sentinels are identical.
		m.followFailover(ctx, e, msg)
	}
	if e.Type == "+failover-end-for-timeout" {
		m.timedOut[timedOutKey(msg.from, e.MasterName)] = msg.at
	}
	switch e.Type {
	case "+switch-master":
		m.handleSwitch(ctx, e, msg)
	case "+convert-to-slave", "+role-change", "-sdown", "-odown", "+failover-end",
		"+failover-end-for-timeout", "+config-update-from", "+reset-master", "+monitor", "-monitor":
		if fresh {
			m.requestPoll(ctx)
		}
	}
}

// firstSeen drops the copies of one event that every Sentinel publishes:
// the same channel and payload within two seconds count once.
func (m *Monitor) firstSeen(e Event, at time.Time) bool {
	const window = 2 * time.Second
	for k, t := range m.recent {
		if at.Sub(t) > window {
			delete(m.recent, k)
		}
	}
	k := e.String()
	if _, ok := m.recent[k]; ok {
		return false
	}
	m.recent[k] = at
	return true
}
