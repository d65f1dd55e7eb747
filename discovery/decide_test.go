package discovery

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

func TestDecide(t *testing.T) {
	const (
		self  = "10.0.0.1:6379"
		other = "10.0.0.2:6379"
	)
	majority := func(addr string) Master {
		return Master{Name: "m", Addr: addr, Source: SourceMajority, Agree: 3, Reporting: 3, Total: 3}
	}
	switched := func(addr string) Master {
		return Master{Name: "m", Addr: addr, Source: SourceSwitchMaster, Agree: 1, Reporting: 3, Total: 3}
	}
	stale := func(addr string) Master {
		return Master{Name: "m", Addr: addr, Source: SourceStale, Agree: 1, Reporting: 1, Total: 3}
	}
	master := LocalState{Reachable: true, Role: consulname.RoleMaster, Replicas: 2, Offset: 100}
	holder := master // holds the master tag in Consul
	holder.LastRole = consulname.RoleMaster
	replica := LocalState{Reachable: true, Role: consulname.RoleReplica, MasterAddr: other, LinkUp: true, Offset: 90}
	linkDown := replica
	linkDown.LinkUp, linkDown.LinkDown = false, 3*time.Second

	tests := []struct {
		name       string
		local      LocalState
		truth      Master
		self       []string
		wantRole   string
		wantStatus string
		wantWhy    string
	}{
		{"master confirmed by majority", master, majority(self), nil, consulname.RoleMaster, api.HealthPassing, "confirmed by Sentinel"},
		{"master confirmed by switch-master", master, switched(self), nil, consulname.RoleMaster, api.HealthPassing, "switch-master"},
		{"master confirmed through the connect address", master, majority("127.0.0.1:6379"), []string{"127.0.0.1:6379"}, consulname.RoleMaster, api.HealthPassing, "confirmed"},
		{"master confirmed, address written differently", master, majority("10.0.0.1:06379"), nil, consulname.RoleMaster, api.HealthPassing, "confirmed"},
		{"old master came back", master, majority(other), nil, consulname.RoleUnknown, api.HealthCritical, "claims master but Sentinel names " + other},
		{"old master while switch-master names another", master, switched(other), nil, consulname.RoleUnknown, api.HealthCritical, "claims master but Sentinel names"},
		{"master, stale truth names another", master, stale(other), nil, consulname.RoleUnknown, api.HealthCritical, "stale"},
		{"holder, stale truth names self", holder, stale(self), nil, consulname.RoleMaster, api.HealthWarning, "keeping the master tag it holds"},
		{"holder, truth never learnt", holder, Master{}, nil, consulname.RoleMaster, api.HealthWarning, "Sentinel truth unknown"},
		{"holder, stale truth names another", holder, stale(other), nil, consulname.RoleUnknown, api.HealthCritical, "stale"},
		// A node that does not hold the tag never gains it on an unknown
		// truth: the old master restarted beside its restarting agent.
		{"master at start, truth never learnt", master, Master{}, nil, consulname.RoleUnknown, api.HealthWarning, "not advertised as master until Sentinel confirms it"},
		{"master at start, stale truth names self", master, stale(self), nil, consulname.RoleUnknown, api.HealthWarning, "no Sentinel truth names it"},
		{"replica promoted, holds the replica tag, truth unknown", LocalState{Reachable: true, Role: consulname.RoleMaster, LastRole: consulname.RoleReplica}, Master{}, nil, consulname.RoleUnknown, api.HealthWarning, "not advertised as master"},
		{"replica healthy", replica, majority(other), nil, consulname.RoleReplica, api.HealthPassing, "replica of " + other + ", link up"},
		{"replica link down", linkDown, majority(other), nil, consulname.RoleReplica, api.HealthWarning, "master_link_status down for 3s"},
		{"replica follows a node the truth does not name", replica, majority("10.0.0.3:6379"), nil, consulname.RoleReplica, api.HealthWarning, "Sentinel names 10.0.0.3:6379"},
		{"replica, truth unknown", replica, stale(other), nil, consulname.RoleReplica, api.HealthWarning, "Sentinel truth unknown"},
		{"replica named by the truth (failover in progress)", replica, majority(self), nil, consulname.RoleReplica, api.HealthWarning, "Sentinel names " + self},
		{"unreachable keeps the last role", LocalState{Err: "connection refused", LastRole: consulname.RoleReplica}, majority(other), nil, consulname.RoleReplica, api.HealthCritical, "unreachable: connection refused"},
		{"unreachable master still named by the truth", LocalState{Err: "i/o timeout", LastRole: consulname.RoleMaster}, majority(self), nil, consulname.RoleMaster, api.HealthCritical, "unreachable"},
		{"unreachable master after the truth moved", LocalState{Err: "refused", LastRole: consulname.RoleMaster}, switched(other), nil, consulname.RoleUnknown, api.HealthCritical, "unreachable"},
		{"unreachable before the first read", LocalState{Err: "refused"}, majority(other), nil, consulname.RoleUnknown, api.HealthCritical, "unreachable"},
		{"loading", LocalState{Reachable: true, Loading: true, Role: consulname.RoleMaster, LastRole: consulname.RoleReplica}, majority(other), nil, consulname.RoleReplica, api.HealthCritical, "loading"},
		{"not a data node", LocalState{Reachable: true, Role: "sentinel"}, majority(other), nil, consulname.RoleUnknown, api.HealthCritical, `ROLE says "sentinel"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			selfAddrs := tt.self
			if selfAddrs == nil {
				selfAddrs = []string{self}
			}
			d := Decide(tt.local, tt.truth, Names{Self: selfAddrs})
			if d.Role != tt.wantRole || d.Status != tt.wantStatus || !strings.Contains(d.Why, tt.wantWhy) {
				t.Fatalf("Decide = %s/%s %q, want %s/%s containing %q", d.Role, d.Status, d.Why, tt.wantRole, tt.wantStatus, tt.wantWhy)
			}
			if d.Role == consulname.RoleReplica && d.MasterAddr != tt.local.MasterAddr && tt.local.Reachable {
				t.Fatalf("replica MasterAddr = %q, want %q", d.MasterAddr, tt.local.MasterAddr)
			}
		})
	}
}

// TestDecideNeverTwoMasters walks every combination of local role and truth
// for two nodes and checks that at most one of them is advertised as a
// passing or warning master whenever the truth is known.
func TestDecideNeverTwoMasters(t *testing.T) {
	nodes := []string{"10.0.0.1:6379", "10.0.0.2:6379"}
	locals := []LocalState{
		{Reachable: true, Role: consulname.RoleMaster},
		{Reachable: true, Role: consulname.RoleReplica, LinkUp: true, MasterAddr: nodes[0]},
		{Err: "down", LastRole: consulname.RoleMaster},
	}
	for _, src := range []string{SourceMajority, SourceSwitchMaster, SourceStale} {
		for _, truthAddr := range nodes {
			truth := Master{Name: "m", Addr: truthAddr, Source: src, Total: 3}
			for _, l0 := range locals {
				for _, l1 := range locals {
					masters := 0
					for i, l := range []LocalState{l0, l1} {
						d := Decide(l, truth, Names{Self: []string{nodes[i]}})
						if d.Role == consulname.RoleMaster && d.Status != api.HealthCritical {
							masters++
						}
					}
					if masters > 1 {
						t.Fatalf("two advertised masters with truth %s (%s), locals %+v and %+v", truthAddr, src, l0, l1)
					}
				}
			}
		}
	}
}

func TestGuardStale(t *testing.T) {
	warnMaster := Decision{Role: consulname.RoleMaster, Status: api.HealthWarning, Why: "master; Sentinel truth unknown"}
	cases := []struct {
		name        string
		d           Decision
		unconfirmed time.Duration
		grace       time.Duration
		wantRole    string
		wantStatus  string
	}{
		{"within grace keeps the role", warnMaster, 2 * time.Second, 5 * time.Second, consulname.RoleMaster, api.HealthWarning},
		{"past grace withdraws the tag", warnMaster, 6 * time.Second, 5 * time.Second, consulname.RoleUnknown, api.HealthCritical},
		{"negative grace keeps it for ever", warnMaster, time.Hour, -1, consulname.RoleMaster, api.HealthWarning},
		{"a confirmed master is untouched", Decision{Role: consulname.RoleMaster, Status: api.HealthPassing}, time.Hour, time.Second, consulname.RoleMaster, api.HealthPassing},
		{"a replica is untouched", Decision{Role: consulname.RoleReplica, Status: api.HealthWarning}, time.Hour, time.Second, consulname.RoleReplica, api.HealthWarning},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := guardStale(tc.d, tc.unconfirmed, tc.grace)
			if got.Role != tc.wantRole || got.Status != tc.wantStatus {
				t.Fatalf("guardStale = %s/%s, want %s/%s (%s)", got.Role, got.Status, tc.wantRole, tc.wantStatus, got.Why)
			}
		})
	}
}

// TestDecideNeverGainsOnUnknownTruth: whatever two nodes say about
// themselves, a node that does not hold the master tag is never advertised
// as master while the truth is unknown (never learnt, or stale).
func TestDecideNeverGainsOnUnknownTruth(t *testing.T) {
	nodes := []string{"10.0.0.1:6379", "10.0.0.2:6379"}
	for _, truth := range []Master{{}, {Name: "m", Addr: nodes[0], Source: SourceStale, Total: 3}, {Name: "m", Addr: nodes[1], Source: SourceStale, Total: 3}} {
		for _, last := range []string{"", consulname.RoleReplica, consulname.RoleUnknown} {
			for i, n := range nodes {
				l := LocalState{Reachable: true, Role: consulname.RoleMaster, LastRole: last}
				if d := Decide(l, truth, Names{Self: []string{n}}); d.Role == consulname.RoleMaster {
					t.Fatalf("node %d (last role %q) gained the master tag on truth %+v: %s", i, last, truth, d.Why)
				}
			}
		}
	}
}

func TestNamesSame(t *testing.T) {
	n := Names{
		Self: []string{"127.0.77.11:6379"},
		Resolved: map[string][]string{
			"rca-r1.test:6379":  {"127.0.77.11:6379"},
			"rca-r2.test:6379":  {"127.0.77.12:6379"},
			"both.test:6379":    {"127.0.77.11:6379", "::1:6379"},
			"nowhere.test:6379": nil,
			"rca-r1.test:7000":  {"127.0.77.11:7000"},
		},
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"127.0.77.11:6379", "127.0.77.11:6379", true},
		{"127.0.77.11:6379", "127.0.77.11:06379", true},
		{"rca-r1.test:6379", "127.0.77.11:6379", true},
		{"127.0.77.11:6379", "rca-r1.test:6379", true},
		{"RCA-R1.test.:6379", "127.0.77.11:6379", true}, // normalised before the lookup in Resolved
		{"rca-r1.test:6379", "rca-r1.test:6379", true},
		{"rca-r1.test:6379", "rca-r2.test:6379", false},
		{"rca-r2.test:6379", "127.0.77.11:6379", false},
		{"rca-r1.test:7000", "127.0.77.11:6379", false}, // same host, other port
		{"nowhere.test:6379", "127.0.77.11:6379", false},
		{"unresolved.test:6379", "127.0.77.11:6379", false},
		{"", "", false},
		{"", "127.0.77.11:6379", false},
	} {
		if got := n.Same(tc.a, tc.b); got != tc.want {
			t.Errorf("Same(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	if !n.IsSelf("rca-r1.test:6379") || n.IsSelf("rca-r2.test:6379") {
		t.Errorf("IsSelf: rca-r1 %v, rca-r2 %v", n.IsSelf("rca-r1.test:6379"), n.IsSelf("rca-r2.test:6379"))
	}
	// The whole decision with Sentinel reporting hostnames and the config
	// giving IPs: the master is confirmed, and a replica follows it.
	m := Master{Name: "m", Addr: "rca-r1.test:6379", Source: SourceMajority, Agree: 3, Reporting: 3, Total: 3}
	if d := Decide(LocalState{Reachable: true, Role: consulname.RoleMaster}, m, n); d.Role != consulname.RoleMaster || d.Status != api.HealthPassing {
		t.Errorf("master by hostname: %s/%s %s", d.Role, d.Status, d.Why)
	}
	r := Names{Self: []string{"127.0.77.12:6379"}, Resolved: n.Resolved}
	if d := Decide(LocalState{Reachable: true, Role: consulname.RoleReplica, LinkUp: true, MasterAddr: "127.0.77.11:6379"}, m, r); d.Status != api.HealthPassing {
		t.Errorf("replica of the master by IP, truth by hostname: %s/%s %s", d.Role, d.Status, d.Why)
	}
	if d := Decide(LocalState{Reachable: true, Role: consulname.RoleMaster}, m, r); d.Role != consulname.RoleUnknown || d.Status != api.HealthCritical {
		t.Errorf("old master, truth names another node by hostname: %s/%s %s", d.Role, d.Status, d.Why)
	}
}

func TestHandoffStep(t *testing.T) {
	const self, other, third = "10.0.0.2:6379", "10.0.0.1:6379", "10.0.0.3:6379"
	names := Names{Self: []string{self}, Resolved: map[string][]string{"me.test:6379": {self}}}
	truthSelf := Master{Name: "m", Addr: self, Source: SourceSwitchMaster, Agree: 1, Total: 3}
	oldPeer := []Peer{{ID: "redis-10.0.0.1-6379", Addr: other}}
	for _, tc := range []struct {
		name    string
		truth   Master
		view    PeerView
		expired bool
		limited bool
		want    handoffVerdict
		why     string
	}{
		{"no other master: take", truthSelf, PeerView{}, false, false, handoffTake, ""},
		{"this node under another ID does not count", truthSelf, PeerView{Others: []Peer{{ID: "redis-me.test-6379", Addr: "me.test:6379"}}}, false, false, handoffTake, ""},
		{"old master still answered: wait", truthSelf, PeerView{Others: oldPeer}, false, false, handoffWait, ""},
		{"old master answered at the bound: take anyway", truthSelf, PeerView{Others: oldPeer}, true, false, handoffTakeAnyway, "consul still answers redis-10.0.0.1-6379 (10.0.0.1:6379)"},
		{"ACL hides registrations: wait", truthSelf, PeerView{Hidden: true}, false, false, handoffWait, ""},
		{"ACL hides registrations at the bound: take, saying why", truthSelf, PeerView{Hidden: true}, true, false, handoffTakeAnyway, "ACL token may not read every registration"},
		{"consul not reachable: wait", truthSelf, PeerView{Err: errors.New("connection refused")}, false, false, handoffWait, ""},
		{"consul not reachable at the bound: never take", truthSelf, PeerView{Err: errors.New("connection refused")}, true, false, handoffUnknown, "connection refused"},
		{"consul not reachable at the limit: still never take", truthSelf, PeerView{Err: errors.New("No cluster leader")}, true, true, handoffUnknown, "not taking the master tag until consul answers"},
		{"truth unknown: refuse", Master{}, PeerView{}, false, false, handoffRefuse, "unknown"},
		{"truth stale: refuse even with nobody answered", Master{Name: "m", Addr: self, Source: SourceStale}, PeerView{}, true, false, handoffRefuse, "stale"},
		{"truth names the node consul answers: refuse, never take anyway", Master{Name: "m", Addr: other, Source: SourceMajority}, PeerView{Others: oldPeer}, true, false, handoffRefuse, "names 10.0.0.1:6379"},
		{"truth moved to a third node", Master{Name: "m", Addr: third, Source: SourceMajority}, PeerView{}, false, false, handoffRefuse, "names 10.0.0.3:6379"},
		{"old master alive at the bound: wait on", truthSelf, PeerView{Others: oldPeer, Alive: oldPeer}, true, false, handoffWait, "answers Redis"},
		{"old master alive at the limit: take anyway", truthSelf, PeerView{Others: oldPeer, Alive: oldPeer}, true, true, handoffTakeAnyway, "consul still answers"},
		{"this node alive under another ID does not hold it back", truthSelf, PeerView{Others: []Peer{{ID: "x", Addr: "me.test:6379"}}, Alive: []Peer{{ID: "x", Addr: "me.test:6379"}}}, true, false, handoffTake, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := handoffStep(tc.truth, tc.view, tc.expired, tc.limited, names)
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Fatalf("handoffStep = %d %q, want %d with %q", got, why, tc.want, tc.why)
			}
		})
	}
}
