package httpapi

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// fakeSource serves fixed data and counts Cluster calls.
type fakeSource struct {
	mu       sync.Mutex
	snap     status.Snapshot
	cluster  status.Cluster
	calls    int
	delay    time.Duration
	blockCtx bool // Cluster waits for ctx to end
}

func (f *fakeSource) Snapshot() status.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSource) Cluster(ctx context.Context) status.Cluster {
	f.mu.Lock()
	f.calls++
	c, d, block := f.cluster, f.delay, f.blockCtx
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return status.Cluster{Error: "consul: " + ctx.Err().Error()}
	}
	if d > 0 {
		time.Sleep(d)
	}
	return c
}

func (f *fakeSource) set(s status.Snapshot, c status.Cluster) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap, f.cluster = s, c
}

func (f *fakeSource) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// entry builds a health API entry the way Consul returns it.
func entry(node, id, addr string, port int, tags []string, meta map[string]string, st, output string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node, Address: addr},
		Service: &api.AgentService{ID: id, Service: "svc", Address: addr, Port: port, Tags: tags, Meta: meta},
		Checks: api.HealthChecks{
			{Node: node, CheckID: "serfHealth", Name: "Serf Health Status", Status: api.HealthPassing},
			{Node: node, CheckID: "service:" + id, ServiceID: id, Name: "ttl", Status: st, Output: output},
		},
	}
}

func redisEntry(node, shard, ip string, port int, role, masterOf, st, out string) *api.ServiceEntry {
	id := fmt.Sprintf("redis-%s-%d", ip, port)
	tags := []string{}
	meta := map[string]string{"master_name": shard, "redis_version": "7.0.15"}
	if role != "" {
		tags = []string{role, shard + "-" + role}
		meta["role"] = role
	}
	if role == "replica" {
		meta["master_addr"] = masterOf
	}
	return entry(node, id, ip, port, tags, meta, st, out)
}

// fixture is a two-shard cluster in mid-life: shard "orders" healthy after
// a failover, shard "sessions" with a replica whose link is down and one
// Sentinel that disagrees.
func fixture(now time.Time, failedOver bool) (status.Snapshot, status.Cluster) {
	ordersMaster, ordersReplica := "10.0.1.11:6379", "10.0.1.12:6379"
	if failedOver {
		ordersMaster, ordersReplica = ordersReplica, ordersMaster
	}
	omHost, omPort := splitAddr(ordersMaster)
	orHost, orPort := splitAddr(ordersReplica)
	old := redisEntry("cache-2", "orders", orHost, orPort, "replica", ordersMaster, api.HealthPassing, "replica of "+ordersMaster+", link up, lag 0")
	if failedOver {
		// The old master was killed: its agent reports it unreachable and
		// drops the role tag.
		old = redisEntry("cache-1", "orders", orHost, orPort, "", "", api.HealthCritical, "Redis unreachable: dial tcp "+ordersReplica+": connect: connection refused")
	}
	redis := []*api.ServiceEntry{
		redisEntry("cache-1", "orders", omHost, omPort, "master", "", api.HealthPassing, "master, confirmed by Sentinel (3/3)"),
		old,
		redisEntry("cache-3", "orders", "10.0.1.13", 6379, "replica", ordersMaster, api.HealthPassing, "replica of "+ordersMaster+", link up, lag 0"),
		redisEntry("cache-4", "sessions", "10.0.2.21", 6379, "master", "", api.HealthPassing, "master, confirmed by Sentinel (2/3)"),
		redisEntry("cache-5", "sessions", "10.0.2.22", 6379, "replica", "10.0.2.21:6379", api.HealthWarning, "replica of 10.0.2.21:6379, master_link_status down for 14s"),
		redisEntry("cache-6", "sessions", "10.0.2.23", 6379, "replica", "10.0.2.21:6379", api.HealthPassing, "replica of 10.0.2.21:6379, link up, lag 1"),
	}
	sentinels := []*api.ServiceEntry{
		entry("cache-1", "redis-sentinel-10.0.1.11-26379", "10.0.1.11", 26379, []string{"orders", "sessions"}, nil, api.HealthPassing, "monitors 2 masters"),
		entry("cache-2", "redis-sentinel-10.0.1.12-26379", "10.0.1.12", 26379, []string{"orders", "sessions"}, nil, api.HealthPassing, "monitors 2 masters"),
		entry("cache-3", "redis-sentinel-10.0.1.13-26379", "10.0.1.13", 26379, []string{"orders", "sessions"}, nil, api.HealthPassing, "monitors 2 masters"),
	}
	proxies := []*api.ServiceEntry{
		entry("proxy-1", "twemproxy-proxy-1-alpha", "10.0.3.31", 22121, []string{"alpha"}, nil, api.HealthPassing, "PING ok; servers match Sentinel"),
		entry("proxy-2", "twemproxy-proxy-2-alpha", "10.0.3.32", 22121, []string{"alpha"}, nil, api.HealthPassing, "PING ok; servers match Sentinel"),
	}
	since := now.Add(-3*time.Hour - 12*time.Minute)
	if failedOver {
		since = now.Add(-42 * time.Second)
	}
	truth := []status.Master{
		{Name: "orders", Addr: ordersMaster, Source: "majority", Agree: 3, Known: 3, Since: since},
		{Name: "sessions", Addr: "10.0.2.21:6379", Source: "majority", Agree: 2, Known: 3, Since: now.Add(-26 * time.Hour)},
	}
	views := []status.Sentinel{
		{Address: "10.0.1.11:26379", Up: true, View: map[string]string{"orders": ordersMaster, "sessions": "10.0.2.21:6379"}},
		{Address: "10.0.1.12:26379", Up: true, View: map[string]string{"orders": ordersMaster, "sessions": "10.0.2.21:6379"}},
		{Address: "10.0.1.13:26379", Up: true, View: map[string]string{"orders": ordersMaster, "sessions": "10.0.2.22:6379"}},
	}
	cl := BuildCluster(redis, sentinels, proxies, truth, views)
	cl.UpdatedAt = now

	events := []telemetry.Event{
		{Time: now.Add(-3 * time.Hour), Kind: telemetry.KindAgent, Type: "start", Subject: "cache-1", Detail: "version 0.4.0"},
		{Time: now.Add(-3 * time.Hour), Kind: telemetry.KindConsul, Type: "register", Subject: "redis-10.0.1.11-6379", Detail: "role master"},
		{Time: now.Add(-14 * time.Second), Kind: telemetry.KindSentinel, Type: "+sdown", Subject: "sessions", Detail: "slave 10.0.2.22:6379 10.0.2.22 6379 @ sessions 10.0.2.21 6379", Level: "warn"},
	}
	var failovers []telemetry.Failover
	if failedOver {
		at := now.Add(-42 * time.Second)
		events = append(events,
			telemetry.Event{Time: at.Add(-1100 * time.Millisecond), Kind: telemetry.KindSentinel, Type: "+odown", Subject: "orders", Detail: "master orders 10.0.1.11 6379 #quorum 3/2", Level: "warn"},
			telemetry.Event{Time: at, Kind: telemetry.KindSentinel, Type: "+switch-master", Subject: "orders", Detail: "orders 10.0.1.11 6379 10.0.1.12 6379"},
			telemetry.Event{Time: at.Add(3 * time.Millisecond), Kind: telemetry.KindTruth, Type: "switch", Subject: "orders", Detail: "10.0.1.11:6379 → 10.0.1.12:6379 (switch-master)"},
			telemetry.Event{Time: at.Add(4200 * time.Microsecond), Kind: telemetry.KindConsul, Type: "role", Subject: "redis-10.0.1.12-6379", Detail: "replica → master"},
			telemetry.Event{Time: at.Add(9800 * time.Microsecond), Kind: telemetry.KindTwemproxy, Type: "restart", Subject: "main", Detail: "ok in 4.1ms, blackout 2.3ms"},
			telemetry.Event{Time: at.Add(1200 * time.Millisecond), Kind: telemetry.KindConsul, Type: "critical", Subject: "redis-10.0.1.11-6379", Detail: "Redis unreachable: connection refused", Level: "error"},
		)
		failovers = []telemetry.Failover{
			{Master: "orders", From: "10.0.1.12:6379", To: "10.0.1.11:6379", At: now.Add(-2 * time.Hour), ConsulAt: now.Add(-2*time.Hour + 6*time.Millisecond), TwemproxyAt: now.Add(-2*time.Hour + 14*time.Millisecond)},
			{Master: "orders", From: "10.0.1.11:6379", To: "10.0.1.12:6379", At: at, ConsulAt: at.Add(4200 * time.Microsecond), TwemproxyAt: at.Add(9800 * time.Microsecond)},
		}
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].Time.Before(events[j].Time) })
	restartAt := now.Add(-3 * time.Hour)
	if failedOver {
		restartAt = now.Add(-42 * time.Second)
	}
	snap := status.Snapshot{
		Node: "cache-1", Version: "v0.4.0", StartedAt: now.Add(-3*time.Hour - 20*time.Minute), Now: now,
		Instances: []status.Instance{{
			ServiceID: "redis-10.0.1.11-6379", Service: "redis", Address: "127.0.0.1:6379", Announce: "10.0.1.11:6379",
			MasterName: "orders", Role: map[bool]string{false: "master", true: "replica"}[failedOver],
			Status: api.HealthPassing, Why: "master, confirmed by Sentinel (3/3)", Since: since,
		}},
		LocalSentinels: []status.LocalSentinel{{ServiceID: "redis-sentinel-10.0.1.11-26379", Address: "10.0.1.11:26379", Masters: []string{"orders", "sessions"}, Status: api.HealthPassing, Why: "monitors 2 masters"}},
		Sentinels:      views,
		Masters:        truth,
		Proxies: []status.Proxy{{
			Name: "main", ConfigFile: "/etc/nutcracker/nutcracker.yml", ConfigHash: "9f2c1e7ab4d05c33e1f0", Mode: "supervise",
			Pools: []status.Pool{{Name: "alpha", Listen: "10.0.3.31:22121", ServiceID: "twemproxy-proxy-1-alpha", Status: api.HealthPassing, Why: "PING ok",
				Servers: []status.Server{
					{Name: "orders", Addr: ordersMaster, Weight: 1, Matches: true},
					{Name: "sessions", Addr: "10.0.2.21:6379", Weight: 1, Matches: true},
				}}},
			LastRestart: &status.Restart{At: restartAt, Duration: 4100 * time.Microsecond, Result: "ok", Reason: "orders → " + ordersMaster},
			Restarts:    2, Blackout: 2300 * time.Microsecond,
		}},
		Events:    events,
		Failovers: failovers,
	}
	return snap, cl
}
