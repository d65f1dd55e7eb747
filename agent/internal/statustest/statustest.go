// Package statustest holds the test data of the status contract: health
// API entries as Consul returns them and a two-shard cluster fixture, for
// the tests of agent/httpapi and agent/statusclient. Only tests import it.
package statustest

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
)

// Instances turns entries into what consulhealth.Service returns for them,
// skipping the nil and service-less ones as it does.
func Instances(es []*api.ServiceEntry) []consulhealth.Instance {
	out := []consulhealth.Instance{}
	for _, e := range es {
		if e == nil || e.Service == nil {
			continue
		}
		in := consulhealth.Instance{
			ID: e.Service.ID, Service: e.Service.Service, Tags: e.Service.Tags, Meta: e.Service.Meta,
			Status: e.Checks.AggregatedStatus(), Checks: e.Checks,
		}
		host := e.Service.Address
		if e.Node != nil {
			in.Node = e.Node.Node
			if host == "" {
				host = e.Node.Address
			}
		}
		if host != "" && e.Service.Port != 0 {
			in.Address = net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
		}
		out = append(out, in)
	}
	return out
}

// Entry builds a health API entry the way Consul returns it.
func Entry(node, id, addr string, port int, tags []string, meta map[string]string, st, output string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node, Address: addr},
		Service: &api.AgentService{ID: id, Service: "svc", Address: addr, Port: port, Tags: tags, Meta: meta},
		Checks: api.HealthChecks{
			{Node: node, CheckID: "serfHealth", Name: "Serf Health Status", Status: api.HealthPassing},
			{Node: node, CheckID: "service:" + id, ServiceID: id, Name: "ttl", Status: st, Output: output},
		},
	}
}

// RedisEntry is a Redis registered as the agent registers it: role tags,
// Meta with the master name (and the master of a replica).
func RedisEntry(node, shard, ip string, port int, role, masterOf, st, out string) *api.ServiceEntry {
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
	return Entry(node, id, ip, port, tags, meta, st, out)
}

// BuildFunc builds the cluster view from health API instances: the
// caller passes httpapi.BuildCluster (this package cannot import httpapi,
// whose own tests import it).
type BuildFunc func(redis, sentinels, proxies []consulhealth.Instance, truth []status.Master, views []status.Sentinel) status.Cluster

// Fixture is a two-shard cluster in mid-life: shard "orders" after a
// failover when failedOver (healthy otherwise), shard "sessions" with a
// replica whose link is down and one Sentinel that disagrees.
func Fixture(now time.Time, failedOver bool, build BuildFunc) (status.Snapshot, status.Cluster) {
	ordersMaster, ordersReplica := "10.0.1.11:6379", "10.0.1.12:6379"
	if failedOver {
		ordersMaster, ordersReplica = ordersReplica, ordersMaster
	}
	omHost, omPort, _ := addr.Split(ordersMaster)
	orHost, orPort, _ := addr.Split(ordersReplica)
	old := RedisEntry("cache-2", "orders", orHost, orPort, "replica", ordersMaster, api.HealthPassing, "replica of "+ordersMaster+", link up, lag 0")
	if failedOver {
		// The old master was killed: its agent reports it unreachable and
		// drops the role tag.
		old = RedisEntry("cache-1", "orders", orHost, orPort, "", "", api.HealthCritical, "Redis unreachable: dial tcp "+ordersReplica+": connect: connection refused")
	}
	redis := []*api.ServiceEntry{
		RedisEntry("cache-1", "orders", omHost, omPort, "master", "", api.HealthPassing, "master, confirmed by Sentinel (3/3)"),
		old,
		RedisEntry("cache-3", "orders", "10.0.1.13", 6379, "replica", ordersMaster, api.HealthPassing, "replica of "+ordersMaster+", link up, lag 0"),
		RedisEntry("cache-4", "sessions", "10.0.2.21", 6379, "master", "", api.HealthPassing, "master, confirmed by Sentinel (2/3)"),
		RedisEntry("cache-5", "sessions", "10.0.2.22", 6379, "replica", "10.0.2.21:6379", api.HealthWarning, "replica of 10.0.2.21:6379, master_link_status down for 14s"),
		RedisEntry("cache-6", "sessions", "10.0.2.23", 6379, "replica", "10.0.2.21:6379", api.HealthPassing, "replica of 10.0.2.21:6379, link up, lag 1"),
	}
	sentinels := []*api.ServiceEntry{
		Entry("cache-1", "redis-sentinel-10.0.1.11-26379", "10.0.1.11", 26379, []string{"orders", "sessions"}, nil, api.HealthPassing, "monitors 2 masters"),
		Entry("cache-2", "redis-sentinel-10.0.1.12-26379", "10.0.1.12", 26379, []string{"orders", "sessions"}, nil, api.HealthPassing, "monitors 2 masters"),
		Entry("cache-3", "redis-sentinel-10.0.1.13-26379", "10.0.1.13", 26379, []string{"orders", "sessions"}, nil, api.HealthPassing, "monitors 2 masters"),
	}
	proxies := []*api.ServiceEntry{
		Entry("proxy-1", "twemproxy-proxy-1-alpha", "10.0.3.31", 22121, []string{"alpha"}, nil, api.HealthPassing, "PING ok; servers match Sentinel"),
		Entry("proxy-2", "twemproxy-proxy-2-alpha", "10.0.3.32", 22121, []string{"alpha"}, nil, api.HealthPassing, "PING ok; servers match Sentinel"),
	}
	since := now.Add(-3*time.Hour - 12*time.Minute)
	if failedOver {
		since = now.Add(-42 * time.Second)
	}
	truth := []status.Master{
		{Name: "orders", Addr: ordersMaster, Source: "majority", Agree: 3, Total: 3, Since: since},
		{Name: "sessions", Addr: "10.0.2.21:6379", Source: "majority", Agree: 2, Total: 3, Since: now.Add(-26 * time.Hour)},
	}
	views := []status.Sentinel{
		{Address: "10.0.1.11:26379", Up: true, View: map[string]string{"orders": ordersMaster, "sessions": "10.0.2.21:6379"}},
		{Address: "10.0.1.12:26379", Up: true, View: map[string]string{"orders": ordersMaster, "sessions": "10.0.2.21:6379"}},
		{Address: "10.0.1.13:26379", Up: true, View: map[string]string{"orders": ordersMaster, "sessions": "10.0.2.22:6379"}},
	}
	cl := build(Instances(redis), Instances(sentinels), Instances(proxies), truth, views)
	cl.UpdatedAt = now

	events := []status.Event{
		{Time: now.Add(-3 * time.Hour), Kind: "agent", Type: "start", Subject: "cache-1", Detail: "version 0.4.0"},
		{Time: now.Add(-3 * time.Hour), Kind: "consul", Type: "register", Subject: "redis-10.0.1.11-6379", Detail: "role master"},
		{Time: now.Add(-14 * time.Second), Kind: "sentinel", Type: "+sdown", Subject: "sessions", Detail: "slave 10.0.2.22:6379 10.0.2.22 6379 @ sessions 10.0.2.21 6379", Level: "warn"},
	}
	var failovers []status.Failover
	if failedOver {
		at := now.Add(-42 * time.Second)
		events = append(events,
			status.Event{Time: at.Add(-1100 * time.Millisecond), Kind: "sentinel", Type: "+odown", Subject: "orders", Detail: "master orders 10.0.1.11 6379 #quorum 3/2", Level: "warn"},
			status.Event{Time: at, Kind: "sentinel", Type: "+switch-master", Subject: "orders", Detail: "orders 10.0.1.11 6379 10.0.1.12 6379"},
			status.Event{Time: at.Add(3 * time.Millisecond), Kind: "truth", Type: "switch", Subject: "orders", Detail: "10.0.1.11:6379 → 10.0.1.12:6379 (switch-master)"},
			status.Event{Time: at.Add(4200 * time.Microsecond), Kind: "consul", Type: "role", Subject: "redis-10.0.1.12-6379", Detail: "replica → master"},
			status.Event{Time: at.Add(9800 * time.Microsecond), Kind: "twemproxy", Type: "restart", Subject: "main", Detail: "ok in 4.1ms, blackout 2.3ms"},
			status.Event{Time: at.Add(1200 * time.Millisecond), Kind: "consul", Type: "critical", Subject: "redis-10.0.1.11-6379", Detail: "Redis unreachable: connection refused", Level: "error"},
		)
		failovers = []status.Failover{
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
					{Name: "orders", Addr: ordersMaster, Weight: 1, Follows: true, Matches: true},
					{Name: "sessions", Addr: "10.0.2.21:6379", Weight: 1, Follows: true, Matches: true},
				}}},
			LastRestart: &status.Restart{At: restartAt, Duration: 4100 * time.Microsecond, Result: "ok", Reason: "orders → " + ordersMaster},
			Restarts:    2, Blackout: 2300 * time.Microsecond,
		}},
		Events:    events,
		Failovers: failovers,
	}
	return snap, cl
}
