package haproxy

import (
	"strings"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	rw := Server{Backend: "redis-rw", Server: "mymaster", MasterName: "mymaster"}
	at := func(a string, op, admin, check int) []ServerState {
		return []ServerState{{Backend: "redis-rw", Server: "mymaster", Addr: a, OpState: op, Admin: admin, CheckState: check}}
	}
	since := time.Unix(1000, 0)
	truth := map[string]Master{"mymaster": {Addr: "10.0.0.2:6379", Since: since}}
	for _, tc := range []struct {
		name    string
		masters map[string]Master
		state   []ServerState
		step    *Step // nil: no step
		matches bool
		problem string
	}{
		{name: "matches", masters: truth, state: at("10.0.0.2:6379", OpRunning, 0, 0), matches: true},
		{name: "matches written differently", masters: map[string]Master{"mymaster": {Addr: "[::ffff:10.0.0.2]:06379"}},
			state: at("10.0.0.2:6379", OpRunning, 0, 0), matches: true},
		{name: "moved", masters: truth, state: at("10.0.0.1:6379", OpRunning, 0, 0),
			step:    &Step{Server: rw, Move: true, From: "10.0.0.1:6379", To: "10.0.0.2:6379", Host: "10.0.0.2", Port: 6379, Since: since},
			problem: "redis-rw/mymaster is 10.0.0.1:6379 but Sentinel says 10.0.0.2:6379"},
		{name: "moved, in maintenance, checked and down", masters: truth, state: at("10.0.0.1:6379", OpStopped, AdminForcedMaint, CheckEnabled|2),
			step:    &Step{Server: rw, Move: true, From: "10.0.0.1:6379", To: "10.0.0.2:6379", Host: "10.0.0.2", Port: 6379, Ready: true, HealthUp: true, Since: since},
			problem: "but Sentinel says"},
		{name: "moved, unchecked and down is not forced up", masters: truth, state: at("10.0.0.1:6379", OpStopped, 0, 0),
			step:    &Step{Server: rw, Move: true, From: "10.0.0.1:6379", To: "10.0.0.2:6379", Host: "10.0.0.2", Port: 6379, Since: since},
			problem: "but Sentinel says"},
		{name: "at the master but drained", masters: truth, state: at("10.0.0.2:6379", OpRunning, AdminForcedDrain, 0),
			step: &Step{Server: rw, Ready: true, From: "10.0.0.2:6379", To: "10.0.0.2:6379", Since: since}, problem: "maintenance or drain"},
		{name: "at the master, maintenance inherited from a tracked server: reported, not fought", masters: truth, state: at("10.0.0.2:6379", OpStopped, AdminInheritedMaint, 0),
			problem: "inherits from a tracked server"},
		{name: "at the master, disabled in the config", masters: truth, state: at("10.0.0.2:6379", OpStopped, AdminForcedMaint|AdminConfigMaint, 0),
			step: &Step{Server: rw, Ready: true, From: "10.0.0.2:6379", To: "10.0.0.2:6379", Since: since}, problem: "maintenance or drain (admin state 0x5)"},
		{name: "at the master, down by its check: left to the check", masters: truth, state: at("10.0.0.2:6379", OpStopped, 0, CheckEnabled),
			matches: true},
		{name: "stale truth is not acted on", masters: map[string]Master{"mymaster": {Addr: "10.0.0.2:6379", Stale: true}},
			state: at("10.0.0.1:6379", OpRunning, 0, 0), problem: "have not confirmed mymaster lately; keeping 10.0.0.1:6379"},
		{name: "no truth", masters: map[string]Master{}, state: at("10.0.0.1:6379", OpRunning, 0, 0), problem: "no Sentinel truth for mymaster"},
		{name: "hostname truth", masters: map[string]Master{"mymaster": {Addr: "redis-2.example:6379"}},
			state: at("10.0.0.1:6379", OpRunning, 0, 0), problem: `host "redis-2.example" is not an IP address`},
		{name: "missing server", masters: truth, state: []ServerState{{Backend: "redis-rw", Server: "other", Addr: "10.0.0.1:6379"}},
			problem: "HAProxy has no server redis-rw/mymaster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			steps, verdicts := Plan([]Server{rw}, tc.masters, tc.state)
			if len(verdicts) != 1 {
				t.Fatalf("got %d verdicts, want 1", len(verdicts))
			}
			v := verdicts[0]
			if v.Matches != tc.matches {
				t.Errorf("matches = %v, want %v (%s)", v.Matches, tc.matches, v.Problem)
			}
			if tc.problem == "" && v.Problem != "" || !strings.Contains(v.Problem, tc.problem) {
				t.Errorf("problem = %q, want it to contain %q", v.Problem, tc.problem)
			}
			switch {
			case tc.step == nil && len(steps) > 0:
				t.Errorf("got steps %+v, want none", steps)
			case tc.step != nil && (len(steps) != 1 || steps[0] != *tc.step):
				t.Errorf("got steps %+v, want %+v", steps, *tc.step)
			}
		})
	}
}

// Two servers of two shards: one moves, the other is left alone.
func TestPlanTouchesOnlyWhatDiffers(t *testing.T) {
	a := Server{Backend: "a", Server: "m", MasterName: "shard-a"}
	b := Server{Backend: "b", Server: "m", MasterName: "shard-b"}
	steps, verdicts := Plan([]Server{a, b},
		map[string]Master{"shard-a": {Addr: "10.0.0.9:6379"}, "shard-b": {Addr: "10.0.0.3:6379"}},
		[]ServerState{{Backend: "a", Server: "m", Addr: "10.0.0.1:6379", OpState: OpRunning}, {Backend: "b", Server: "m", Addr: "10.0.0.3:6379", OpState: OpRunning}})
	if len(steps) != 1 || steps[0].Server != a {
		t.Fatalf("steps %+v, want one for %s", steps, a.Name())
	}
	if verdicts[0].Matches || !verdicts[1].Matches {
		t.Fatalf("verdicts %+v", verdicts)
	}
}

func TestUnknownNames(t *testing.T) {
	state := []ServerState{{Backend: "redis-rw", Server: "mymaster"}, {Backend: "redis-ro", Server: "r1"}}
	got := UnknownNames([]Server{
		{Backend: "redis-rw", Server: "mymaster"}, {Backend: "redis-rww", Server: "mymaster"}, {Backend: "redis-ro", Server: "r2"},
	}, state)
	if len(got) != 2 ||
		got[1] != `HAProxy has no backend "redis-rww" with servers (it has: redis-ro, redis-rw)` ||
		got[2] != `HAProxy's backend "redis-ro" has no server "r2" (it has: r1)` {
		t.Fatalf("got %v", got)
	}
}
