package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// TestMonitorPromotionBeforeAnnouncement: kill -9 of a master watched by
// three real Sentinels. A Monitor with FollowPromotion names the promoted
// replica (source promotion) before the first +switch-master of any
// Sentinel reaches a test subscriber: when that event arrives, the
// Monitor's truth already names its new master. The majority takes over
// afterwards. Asserted on the order of events, not on a duration.
func TestMonitorPromotionBeforeAnnouncement(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Redis and Sentinel")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := harness.ForTest(t, sandbox.Options{})
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "promo", Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	logs := &sandbox.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("monitor logs:\n%s", logs.String())
		}
	})
	var addrs []string
	for _, s := range shard.Sentinels {
		addrs = append(addrs, s.Addr())
	}
	mon, err := discovery.NewMonitor(discovery.MonitorOptions{
		Addresses: addrs, FollowPromotion: true,
		QueryTimeout: 300 * time.Millisecond, ResyncInterval: 500 * time.Millisecond, PingInterval: 250 * time.Millisecond,
		Metrics: telemetry.Discard(), Journal: telemetry.NewJournal(200),
		Logger: hclog.New(&hclog.LoggerOptions{Name: "monitor", Level: hclog.Debug, Output: logs, TimeFormat: "15:04:05.000000"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mon.Run(mctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	old := shard.Master.Addr()
	if err := sandbox.Poll(ctx, "the Monitor's first truth", func(context.Context) error {
		return wantTruth(mon, shard.Name, old, discovery.SourceMajority)
	}); err != nil {
		t.Fatal(err)
	}

	// The test's own subscriber: at the first +switch-master of any
	// Sentinel, what does the Monitor say?
	var truth discovery.Master
	first := firstSentinelEvent(ctx, t, shard, func(sentinelEvent) bool {
		truth = mon.Masters()[shard.Name]
		return true
	}, "+switch-master")

	killed := time.Now()
	if err := shard.Master.Kill(); err != nil {
		t.Fatal(err)
	}
	var got sentinelEvent
	select {
	case got = <-first:
	case <-ctx.Done():
		t.Fatal("no +switch-master from any Sentinel")
	}
	newAddr, err := shard.WaitFailover(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if truth.Addr != newAddr || truth.Source != discovery.SourcePromotion {
		t.Fatalf("at the first +switch-master (from %s) the Monitor said %s (%s), want %s (%s)",
			got.s.Addr(), truth.Addr, truth.Source, newAddr, discovery.SourcePromotion)
	}
	t.Logf("kill -9 → promotion applied %s; → first +switch-master (from %s) %s",
		truth.Since.Sub(killed).Round(time.Millisecond), got.s.Addr(), got.at.Sub(killed).Round(time.Millisecond))
	if err := sandbox.Poll(ctx, "the majority to take over", func(context.Context) error {
		return wantTruth(mon, shard.Name, newAddr, discovery.SourceMajority)
	}); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "promotion confirmed") || strings.Contains(line, "master changed") {
			t.Log(line)
		}
	}
}

func wantTruth(mon *discovery.Monitor, name, addr, source string) error {
	m := mon.Masters()[name]
	if m.Addr != addr || m.Source != source {
		return fmt.Errorf("truth is %s (%s)", m.Addr, m.Source)
	}
	return nil
}
