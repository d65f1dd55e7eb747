package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// pfPaused waits until the Redis at addr holds a SET back (the write
// pause) and returns when it first did.
func pfPaused(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	if err := sandbox.Poll(ctx, addr+" holding writes back", func(ctx context.Context) error {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := sandbox.Do(pctx, addr, "SET", "pf-probe", "1"); err == nil {
			return fmt.Errorf("SET acknowledged: not paused")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// pfWritable returns how long after from the Redis at addr acknowledged a
// SET again, asking every few milliseconds for at most limit.
func pfWritable(ctx context.Context, t *testing.T, addr string, from time.Time, limit time.Duration) time.Duration {
	t.Helper()
	for i := 0; time.Since(from) < limit && i < 10000; i++ {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		v, err := sandbox.Do(pctx, addr, "SET", "pf-probe", "2")
		cancel()
		if err == nil && v == "OK" {
			return time.Since(from)
		}
	}
	t.Fatalf("%s still holds writes back %s after %s", addr, limit, from.Format(time.StampMilli))
	return 0
}

// pfStalledFailover starts the stack with Sentinel's down-after at
// downAfter, forbids SLAVEOF on the replicas, so that the leader selects one
// but cannot promote it and aborts after failover-timeout, subscribes to
// that abort, and starts a SENTINEL FAILOVER: it returns once the old master
// holds writes back, with the leader Sentinel and the subscription.
func pfStalledFailover(ctx context.Context, t *testing.T, downAfter time.Duration) (*pfEnv, *sandbox.Sentinel, *redis.PubSub) {
	t.Helper()
	e := newPFEnv(t, ctx, map[string]any{"pause_writes": true}, sandbox.ShardOptions{DownAfter: downAfter}, nil)
	for _, r := range e.shard.Replicas {
		if _, err := sandbox.Do(ctx, r.Addr(), "ACL", "SETUSER", "default", "-slaveof", "-replicaof"); err != nil {
			t.Fatalf("ACL SETUSER on %s: %v", r.Name(), err)
		}
	}
	leader := e.shard.Sentinels[0]
	sub := sandbox.NewClient(leader.Addr(), "").Subscribe(ctx, "-failover-abort-slave-timeout")
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.Do(ctx, leader.Addr(), "SENTINEL", "FAILOVER", e.shard.Name); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	pfPaused(ctx, t, e.shard.Master.Addr())
	return e, leader, sub
}

// TestWritePauseAbortAndAgentKill: a failover Sentinel aborts lifts the
// pause at once; an agent killed -9 during a pause leaves Redis paused for
// one slice at most. Sentinel aborts because neither replica may run
// SLAVEOF (ACL): the leader selects one, cannot promote it, and publishes
// -failover-abort-slave-timeout after failover-timeout. (Replicas at
// replica-priority 0 would not do: SENTINEL FAILOVER refuses to start
// with -NOGOODSLAVE, so no pause would ever begin.)
func TestWritePauseAbortAndAgentKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// 1. The failover aborts: the pause goes at once. Down-after 10s: the
	// pause may wait 5s for a promotion (pauseBudget), longer than the 3s
	// failover-timeout after which Sentinel aborts.
	e, leader, sub := pfStalledFailover(ctx, t, 10*time.Second)
	old := e.shard.Master
	st, err := pfGet(ctx, e.agents[old.Addr()], "/v1/status")
	if err != nil || !strings.Contains(st, `"write_pause"`) {
		t.Errorf("/v1/status of the paused master shows no write_pause (%v)", err)
	}
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	msg, err := sub.ReceiveMessage(actx)
	if err != nil {
		t.Fatalf("waiting for the abort: %v", err)
	}
	abortAt := time.Now()
	took := pfWritable(ctx, t, old.Addr(), abortAt, 5*time.Second)
	t.Logf("%s %s; writes acknowledged again %s later", msg.Channel, msg.Payload, took.Round(time.Millisecond))
	if took > pfSlice+200*time.Millisecond {
		t.Errorf("writes acknowledged again %s after the abort, want within a slice (%s) + 200ms", took, pfSlice)
	}
	jctx, jcancel := context.WithTimeout(ctx, 10*time.Second)
	defer jcancel()
	if err := sandbox.Poll(jctx, "write-unpause in the journal", func(ctx context.Context) error {
		st, err := pfGet(ctx, e.agents[old.Addr()], "/v1/status")
		if err != nil || !strings.Contains(st, "the failover aborted") {
			return fmt.Errorf("no write-unpause for the abort in /v1/status (%v)", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// 2. The agent dies during a pause: Redis takes writes within a slice.
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := sandbox.Poll(fctx, "a second SENTINEL FAILOVER", func(ctx context.Context) error {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := sandbox.Do(qctx, leader.Addr(), "SENTINEL", "FAILOVER", e.shard.Name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pfPaused(ctx, t, old.Addr())
	if err := e.agents[old.Addr()].Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	took = pfWritable(ctx, t, old.Addr(), killedAt, 5*time.Second)
	t.Logf("agent killed -9 during a pause: writes acknowledged again %s later (slice %s)", took.Round(time.Millisecond), pfSlice)
	if took > pfSlice+300*time.Millisecond {
		t.Errorf("writes acknowledged again %s after the agent died, want within a slice (%s) + 300ms", took, pfSlice)
	}
}

// TestWritePauseNotRepeated: a failover that never promotes (the replicas
// may not run SLAVEOF) outlives the pause's budget (half of down-after,
// 500 ms here) before Sentinel aborts it (failover-timeout 3 s). The pause
// is lifted at the budget and never taken again for that failover: found by
// the chaos campaign, where a stalled failover re-paused its old master
// three times in 2 s, each time making it look dead to the Sentinels.
func TestWritePauseNotRepeated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, _, sub := pfStalledFailover(ctx, t, time.Second)
	old := e.shard.Master
	paused := time.Now()
	took := pfWritable(ctx, t, old.Addr(), paused, 5*time.Second)
	t.Logf("pause lifted %s after it began, with no promotion", took.Round(time.Millisecond))
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	msg, err := sub.ReceiveMessage(actx)
	if err != nil {
		t.Fatalf("waiting for the abort: %v", err)
	}
	st, err := pfGet(ctx, e.agents[old.Addr()], "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(st, `"write-pause"`)
	t.Logf("%s %s; the old master's agent paused it %d time(s)", msg.Channel, msg.Payload, n)
	if n != 1 {
		t.Errorf("the old master was paused %d times for one failover, want once", n)
	}
}

// TestWritePauseWithoutRight: the agents' Redis user may not run CLIENT
// PAUSE. The agent beside the outgoing master warns once, and the failover
// is still followed: DNS names the new master.
func TestWritePauseWithoutRight(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker and the agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pass := "pf-agent-secret"
	passFile := t.TempDir() + "/redis.pass"
	if err := os.WriteFile(passFile, []byte(pass), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newPFEnv(t, ctx, map[string]any{"pause_writes": true},
		sandbox.ShardOptions{RedisExtra: []string{"user agent on >" + pass + " " + secRedisACL}},
		map[string]any{"username": "agent", "password_file": passFile})
	old := e.shard.Master
	if _, err := sandbox.Do(ctx, e.shard.Sentinels[0].Addr(), "SENTINEL", "FAILOVER", e.shard.Name); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	newAddr, err := e.shard.WaitFailover(ctx, old.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := sandbox.Poll(ctx, "DNS at the new master", func(ctx context.Context) error {
		if a, err := e.dnsMaster(ctx); err != nil || a != newAddr {
			return fmt.Errorf("DNS master %q (%v)", a, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const warning = "cannot pause writes during the failover: the Redis user may not run CLIENT PAUSE"
	b, err := os.ReadFile(e.agents[old.Addr()].LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), warning); n != 1 {
		t.Errorf("the old master's agent logged %q %d times, want once", warning, n)
	}
}
