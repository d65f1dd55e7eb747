package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestLeaderSentinelKilledAfterPromotion: kill -9 of the master, and the
// leader Sentinel SIGKILLed when it published that it sent REPLICAOF NO ONE
// (+failover-state-send-slaveof-noone, or -wait-promotion, seen by a test
// subscriber on every Sentinel): "at-once" kills it on that event (the
// command is then usually still in its output buffer: the replica is not
// promoted), "after-role" once the selected replica answers ROLE master (the
// promotion happened, no Sentinel announced it). The agents must end where
// the two remaining Sentinels end (DNS and the proxy name the master their
// majority names, once they finished or retried the failover), and DNS,
// sampled every 3 ms all along, never answers two masters.
func TestLeaderSentinelKilledAfterPromotion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	t.Run("at-once", func(t *testing.T) { lkRun(t, false) })
	t.Run("after-role", func(t *testing.T) { lkRun(t, true) })
}

// lkRun runs one such failover; afterRole waits for the promotion before
// the leader is killed.
func lkRun(t *testing.T, afterRole bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newPFEnv(t, ctx, map[string]any{"act_on": "promotion"}, sandbox.ShardOptions{}, nil)
	old := e.shard.Master
	leader := lkLeaderSentOneNoOne(ctx, t, e.shard)

	sctx, stopSampling := context.WithCancel(ctx)
	dns := &poSamples{}
	var wg sync.WaitGroup
	wg.Go(func() { dns.run(sctx, 3*time.Millisecond, e.dnsAnswer) })
	defer func() { stopSampling(); wg.Wait() }()

	killed := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	var lead sentinelEvent
	select {
	case lead = <-leader:
	case <-ctx.Done():
		t.Fatal("no leader Sentinel published that it sent REPLICAOF NO ONE")
	}
	replica := strings.Fields(lead.msg.Payload)[1]
	// Did REPLICAOF NO ONE reach the replica (before the leader died)?
	promotedBy := func() bool {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		return sandbox.Poll(pctx, "the selected replica to take the master role", func(ctx context.Context) error {
			if r, err := e.shard.Node(replica).Role(ctx); err != nil || r != "master" {
				return fmt.Errorf("role %q (%v)", r, err)
			}
			return nil
		}) == nil
	}
	promoted := false
	if afterRole {
		if promoted = promotedBy(); !promoted {
			t.Fatalf("the selected replica %s did not answer ROLE master within 1s of %s", replica, lead.msg.Channel)
		}
	}
	if err := lead.s.Kill(); err != nil {
		t.Fatal(err)
	}
	sigkilled := time.Now()
	lead.ps.Close()
	if !afterRole {
		promoted = promotedBy()
	}
	t.Logf("kill -9 of %s; leader %s published %s (replica %s) after %s and was SIGKILLed %s later; the replica took the master role within 1s: %v",
		old.Addr(), lead.s.Addr(), lead.msg.Channel, replica, lead.at.Sub(killed).Round(time.Millisecond), sigkilled.Sub(lead.at).Round(time.Millisecond), promoted)

	// Where the remaining Sentinels end: both name the same new master, and
	// then DNS and the proxy's file name it too.
	var final string
	if err := sandbox.Poll(ctx, "the remaining Sentinels' majority on a new master", func(ctx context.Context) error {
		a, err := e.shard.CurrentMaster(ctx)
		if err == nil && a == old.Addr() {
			err = fmt.Errorf("the majority still names the killed master %s", a)
		}
		final = a
		return err
	}); err != nil {
		t.Fatal(err)
	}
	finalIP := e.shard.Node(final).IP()
	if err := sandbox.Poll(ctx, "DNS and the proxy at the remaining Sentinels' master", func(ctx context.Context) error {
		if got := e.dnsAnswer(ctx); got != finalIP {
			return fmt.Errorf("DNS answers %q, want %s (%s)", got, finalIP, final)
		}
		if got := e.fileServers(ctx); got != final {
			return fmt.Errorf("the proxy's config names %q, want %s", got, final)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stopSampling()
	wg.Wait()
	t.Logf("the remaining Sentinels ended on %s; DNS answered it %s after the kill; %d DNS readings, changes: %s",
		final, dns.first(finalIP).Sub(killed).Round(time.Millisecond), dns.len(), dns.story(killed))
	if two := dns.multi(); two != "" {
		t.Errorf("DNS answered two masters: %s", two)
	}
}

// lkLeaderSentOneNoOne sends the first Sentinel of shard that publishes
// +failover-state-send-slaveof-noone or +failover-state-wait-promotion: only
// the leader does, on its own link. The event's payload is "slave <ip:port>
// <ip> <port> @ <name> <ip> <port>": the replica it promotes.
func lkLeaderSentOneNoOne(ctx context.Context, t *testing.T, shard *sandbox.Shard) <-chan sentinelEvent {
	return firstSentinelEvent(ctx, t, shard, func(ev sentinelEvent) bool { return len(strings.Fields(ev.msg.Payload)) >= 2 },
		"+failover-state-send-slaveof-noone", "+failover-state-wait-promotion")
}

// story is the readings' changes as offsets from t0, for the log.
func (s *poSamples) story(t0 time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := ""
	for _, c := range s.changes {
		if c.at.Before(t0) {
			continue
		}
		out += fmt.Sprintf(" +%s %q;", c.at.Sub(t0).Round(time.Millisecond), c.val)
	}
	return out
}
