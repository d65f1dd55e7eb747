package httpapi

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/agent/statusview"
)

func addrs(ns []status.ClusterNode) []string {
	out := []string{}
	for _, n := range ns {
		out = append(out, n.Addr)
	}
	return out
}

func TestBuildClusterShards(t *testing.T) {
	truth := func(name, addr string, agree, known int) status.Master {
		return status.Master{Name: name, Addr: addr, Source: "majority", Agree: agree, Total: known, Since: time.Unix(100, 0)}
	}
	m := func(ip string, st string) *api.ServiceEntry {
		return redisEntry("n-"+ip, "s1", ip, 6379, "master", "", st, "out "+ip)
	}
	r := func(ip string, st string) *api.ServiceEntry {
		return redisEntry("n-"+ip, "s1", ip, 6379, "replica", "10.0.0.1:6379", st, "out "+ip)
	}
	none := func(ip string, st string) *api.ServiceEntry {
		return redisEntry("n-"+ip, "s1", ip, 6379, "", "", st, "out "+ip)
	}
	tests := []struct {
		name         string
		redis        []*api.ServiceEntry
		truth        []status.Master
		wantMasters  []string
		wantReplicas []string
		wantOther    []string
		wantVerdict  string
		wantProblem  string // a substring of one problem; "" means no problems
	}{
		{
			name:         "healthy",
			redis:        []*api.ServiceEntry{r("10.0.0.3", api.HealthPassing), m("10.0.0.1", api.HealthPassing), r("10.0.0.2", api.HealthPassing)},
			truth:        []status.Master{truth("s1", "10.0.0.1:6379", 3, 3)},
			wantMasters:  []string{"10.0.0.1:6379"},
			wantReplicas: []string{"10.0.0.2:6379", "10.0.0.3:6379"},
			wantOther:    []string{},
			wantVerdict:  status.VerdictOK,
		},
		{
			name:         "split brain: two masters DNS would answer",
			redis:        []*api.ServiceEntry{m("10.0.0.1", api.HealthPassing), m("10.0.0.2", api.HealthWarning), r("10.0.0.3", api.HealthPassing)},
			truth:        []status.Master{truth("s1", "10.0.0.2:6379", 3, 3)},
			wantMasters:  []string{"10.0.0.1:6379", "10.0.0.2:6379"},
			wantReplicas: []string{"10.0.0.3:6379"},
			wantOther:    []string{},
			wantVerdict:  status.VerdictSplitBrain,
			wantProblem:  "split brain: 2 masters",
		},
		{
			name:         "critical master is not a master: the shard is down",
			redis:        []*api.ServiceEntry{m("10.0.0.1", api.HealthCritical), r("10.0.0.2", api.HealthPassing)},
			truth:        []status.Master{truth("s1", "10.0.0.2:6379", 3, 3)},
			wantMasters:  []string{},
			wantReplicas: []string{"10.0.0.2:6379"},
			wantOther:    []string{"10.0.0.1:6379"},
			wantVerdict:  status.VerdictDown,
			wantProblem:  "no master in Consul (Sentinel says 10.0.0.2:6379)",
		},
		{
			name:         "Consul master differs from the Sentinel truth",
			redis:        []*api.ServiceEntry{m("10.0.0.1", api.HealthPassing), r("10.0.0.2", api.HealthPassing)},
			truth:        []status.Master{truth("s1", "10.0.0.2:6379", 3, 3)},
			wantMasters:  []string{"10.0.0.1:6379"},
			wantReplicas: []string{"10.0.0.2:6379"},
			wantOther:    []string{},
			wantVerdict:  status.VerdictDegraded,
			wantProblem:  "is not the Sentinel master 10.0.0.2:6379",
		},
		{
			name:         "replica link down and an untagged node",
			redis:        []*api.ServiceEntry{m("10.0.0.1", api.HealthPassing), r("10.0.0.2", api.HealthWarning), none("10.0.0.9", api.HealthCritical)},
			truth:        []status.Master{truth("s1", "10.0.0.1:6379", 3, 3)},
			wantMasters:  []string{"10.0.0.1:6379"},
			wantReplicas: []string{"10.0.0.2:6379"},
			wantOther:    []string{"10.0.0.9:6379"},
			wantVerdict:  status.VerdictDegraded,
			wantProblem:  "replica 10.0.0.2:6379 is warning: out 10.0.0.2",
		},
		{
			name:         "Sentinels disagree",
			redis:        []*api.ServiceEntry{m("10.0.0.1", api.HealthPassing), r("10.0.0.2", api.HealthPassing)},
			truth:        []status.Master{truth("s1", "10.0.0.1:6379", 2, 3)},
			wantMasters:  []string{"10.0.0.1:6379"},
			wantReplicas: []string{"10.0.0.2:6379"},
			wantOther:    []string{},
			wantVerdict:  status.VerdictDegraded,
			wantProblem:  "2/3 Sentinels agree",
		},
		{
			name:         "no replica to fail over to",
			redis:        []*api.ServiceEntry{m("10.0.0.1", api.HealthPassing)},
			wantMasters:  []string{"10.0.0.1:6379"},
			wantReplicas: []string{},
			wantOther:    []string{},
			wantVerdict:  status.VerdictDegraded,
			wantProblem:  "no replica registered",
		},
		{
			name:         "truth known but nothing registered",
			truth:        []status.Master{truth("s1", "10.0.0.1:6379", 3, 3)},
			wantMasters:  []string{},
			wantReplicas: []string{},
			wantOther:    []string{},
			wantVerdict:  status.VerdictDown,
			wantProblem:  "no master in Consul",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := buildCluster(tc.redis, nil, nil, tc.truth, nil)
			if len(c.Shards) != 1 {
				t.Fatalf("shards = %d, want 1: %+v", len(c.Shards), c.Shards)
			}
			s := c.Shards[0]
			if s.Name != "s1" {
				t.Errorf("name = %q", s.Name)
			}
			if got := addrs(s.Masters); !reflect.DeepEqual(got, tc.wantMasters) {
				t.Errorf("masters = %v, want %v", got, tc.wantMasters)
			}
			if got := addrs(s.Replicas); !reflect.DeepEqual(got, tc.wantReplicas) {
				t.Errorf("replicas = %v, want %v", got, tc.wantReplicas)
			}
			if got := addrs(s.Other); !reflect.DeepEqual(got, tc.wantOther) {
				t.Errorf("other = %v, want %v", got, tc.wantOther)
			}
			if s.Verdict != tc.wantVerdict {
				t.Errorf("verdict = %q, want %q (problems %q)", s.Verdict, tc.wantVerdict, s.Problems)
			}
			if tc.wantProblem == "" && len(s.Problems) > 0 {
				t.Errorf("problems = %q, want none", s.Problems)
			}
			if tc.wantProblem != "" && !strings.Contains(strings.Join(s.Problems, "\n"), tc.wantProblem) {
				t.Errorf("problems = %q, want one containing %q", s.Problems, tc.wantProblem)
			}
			if len(tc.truth) > 0 && (s.Truth == nil || s.Truth.Addr != tc.truth[0].Addr) {
				t.Errorf("truth = %+v", s.Truth)
			}
		})
	}
}

func TestBuildClusterGroupsAndSorts(t *testing.T) {
	noMeta := entry("n1", "redis-10.0.0.5-6379", "10.0.0.5", 6379, []string{"replica", "beta-replica"}, nil, api.HealthPassing, "")
	c := buildCluster([]*api.ServiceEntry{
		nil,
		{Node: &api.Node{Node: "x"}}, // no service: ignored
		redisEntry("n1", "beta", "10.0.0.10", 6379, "master", "", api.HealthPassing, ""),
		redisEntry("n1", "alpha", "10.0.0.9", 6379, "master", "", api.HealthPassing, ""),
		noMeta,
	}, nil, nil, nil, nil)
	var names []string
	for _, s := range c.Shards {
		names = append(names, s.Name)
	}
	if !reflect.DeepEqual(names, []string{"alpha", "beta"}) {
		t.Fatalf("shards = %v, want alpha, beta (beta from the tag of a node without Meta)", names)
	}
	if got := addrs(c.Shards[1].Replicas); !reflect.DeepEqual(got, []string{"10.0.0.5:6379"}) {
		t.Errorf("beta replicas = %v", got)
	}
	if c.Sentinels == nil || c.Proxies == nil {
		t.Errorf("empty lists must be [] in JSON, got nil")
	}
}

func TestBuildClusterNodeCheckFailsService(t *testing.T) {
	e := redisEntry("n1", "s1", "10.0.0.1", 6379, "master", "", api.HealthPassing, "fine")
	e.Checks[0].Status = api.HealthCritical // serfHealth: the node is gone
	c := buildCluster([]*api.ServiceEntry{e}, nil, nil, nil, nil)
	s := c.Shards[0]
	if len(s.Masters) != 0 || len(s.Other) != 1 {
		t.Fatalf("a master on a failed node must not count: masters %v other %v", addrs(s.Masters), addrs(s.Other))
	}
	if o := s.Other[0]; o.Status != api.HealthCritical || !strings.Contains(o.Output, "Serf Health Status") || !strings.Contains(o.Output, "fine") {
		t.Errorf("other = %+v", o)
	}
}

func TestBuildClusterSentinels(t *testing.T) {
	truth := []status.Master{{Name: "s1", Addr: "10.0.0.1:6379", Agree: 2, Total: 3}}
	sent := func(ip string) *api.ServiceEntry {
		return entry("n-"+ip, "redis-sentinel-"+ip+"-26379", ip, 26379, []string{"s1"}, nil, api.HealthPassing, "ok")
	}
	views := []status.Sentinel{
		{Address: "10.0.0.11:26379", Up: true, View: map[string]string{"s1": "10.0.0.1:6379"}},
		// Written differently than Consul has it: still the same Sentinel.
		{Address: "10.0.0.12:026379", Up: true, View: map[string]string{"s1": "10.0.0.2:6379"}},
		{Address: "10.0.0.13:26379", Up: false, LastError: "refused"},
		{Address: "10.0.0.99:26379", Up: true, View: map[string]string{"s1": "10.0.0.1:6379"}},
	}
	c := buildCluster(nil, []*api.ServiceEntry{sent("10.0.0.13"), sent("10.0.0.11"), sent("10.0.0.12")}, nil, truth, views)
	if len(c.Sentinels) != 4 {
		t.Fatalf("sentinels = %d, want 3 registered + 1 known only to this agent", len(c.Sentinels))
	}
	type row struct {
		addr         string
		up, agrees   string
		registeredID bool
	}
	b := func(p *bool) string {
		if p == nil {
			return "nil"
		}
		if *p {
			return "yes"
		}
		return "no"
	}
	var got []row
	for _, s := range c.Sentinels {
		got = append(got, row{s.Addr, b(s.Up), b(s.Agrees), s.ServiceID != ""})
	}
	want := []row{
		{"10.0.0.11:26379", "yes", "yes", true},
		{"10.0.0.12:26379", "yes", "no", true},
		{"10.0.0.13:26379", "no", "nil", true},
		{"10.0.0.99:26379", "yes", "yes", false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sentinels:\n got %+v\nwant %+v", got, want)
	}
	if c.Sentinels[3].Output != "not registered in Consul" {
		t.Errorf("unregistered output = %q", c.Sentinels[3].Output)
	}
	// The view model turns these into per-shard chips.
	v := statusview.Build(status.Snapshot{}, c, time.Now(), time.Second)
	var states []string
	for _, ch := range v.Shards[0].Sentinels {
		states = append(states, ch.State)
	}
	if !reflect.DeepEqual(states, []string{"agree", "disagree", "down", "agree"}) {
		t.Errorf("chips = %v", states)
	}
	if v.Shards[0].Agree != "2/3 agree" || v.Shards[0].AgreeOK {
		t.Errorf("agree = %q ok=%v", v.Shards[0].Agree, v.Shards[0].AgreeOK)
	}
}

func TestBuildClusterProxies(t *testing.T) {
	p1 := entry("p2", "twemproxy-p2-alpha", "10.0.3.2", 22121, []string{"alpha"}, nil, api.HealthPassing, "ok")
	p2 := entry("p1", "twemproxy-p1-alpha", "10.0.3.1", 22121, []string{"alpha"}, nil, api.HealthCritical, "servers differ from Sentinel")
	p3 := entry("p1", "twemproxy-p1-x", "10.0.3.1", 22122, []string{"whatever"}, map[string]string{"pool": "beta"}, api.HealthPassing, "")
	c := buildCluster(nil, nil, []*api.ServiceEntry{p1, p2, p3}, nil, nil)
	var got []string
	for _, p := range c.Proxies {
		got = append(got, p.Pool+"@"+p.Node+"="+p.Status)
	}
	want := []string{"alpha@p1=critical", "alpha@p2=passing", "beta@p1=passing"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("proxies = %v, want %v", got, want)
	}
}

func TestAddrLess(t *testing.T) {
	in := []string{"127.0.0.10:6379", "127.0.0.9:6380", "127.0.0.9:6379", "host-b:1", "host-a:2"}
	nodes := make([]status.ClusterNode, len(in))
	for i, a := range in {
		nodes[i].Addr = a
	}
	sortNodes(nodes)
	want := []string{"127.0.0.9:6379", "127.0.0.9:6380", "127.0.0.10:6379", "host-a:2", "host-b:1"}
	if got := addrs(nodes); !reflect.DeepEqual(got, want) {
		t.Errorf("sorted = %v, want %v", got, want)
	}
}
