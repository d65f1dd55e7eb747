package discovery

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// TestPauseStep walks the zero-loss rule through a planned failover and
// every way one ends.
func TestPauseStep(t *testing.T) {
	const self, other, third = "10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	names := Names{Self: []string{self}}
	running := FailoverView{Epoch: 7, Old: self, Phase: "+elected-leader", Started: t0, Timeout: 3 * time.Second}
	selected := running
	selected.Selected, selected.Phase = other, "+selected-slave"
	aborted := selected
	aborted.Outcome, aborted.Why = FailoverAborted, "-failover-abort-no-good-slave"
	announced := selected
	announced.Outcome, announced.Why = FailoverAnnounced, other
	promotedSeen := selected
	promotedSeen.Phase = "+promoted-slave"
	master := roleInfo{Role: consulname.RoleMaster}
	replica := roleInfo{Role: consulname.RoleReplica, MasterAddr: other}
	truthSelf := Master{Addr: self, Source: SourceMajority}
	truthOther := Master{Addr: other, Source: SourcePromotion}
	in := func(fo FailoverView, local roleInfo, truth Master, paused bool, now time.Duration) pauseInput {
		return pauseInput{Failover: fo, HasFailover: fo.Epoch != 0, Truth: truth, Local: local, Names: names,
			Now: t0.Add(now), Paused: paused, PausedEpoch: 7, PausedSince: t0}
	}
	cases := []struct {
		name string
		in   pauseInput
		want pauseAction
	}{
		{"no failover", in(FailoverView{}, master, truthSelf, false, 0), pauseNone},
		{"elected: pause before any replica is selected", in(running, master, truthSelf, false, 10*time.Millisecond), pauseHold},
		{"selected another: pause", in(selected, master, truthSelf, false, 0), pauseHold},
		{"another master's failover", in(FailoverView{Epoch: 7, Old: third, Started: t0, Timeout: time.Second}, master, truthSelf, false, 0), pauseNone},
		{"this node is the selected one", in(FailoverView{Epoch: 7, Old: third, Selected: self, Started: t0}, master, truthSelf, false, 0), pauseNone},
		{"local already a replica", in(selected, replica, truthSelf, false, 0), pauseNone},
		{"a failover gone silent does not start a pause", in(selected, master, truthSelf, false, 7*time.Second), pauseNone},
		{"an aborted failover does not start one", in(aborted, master, truthSelf, false, 0), pauseNone},
		{"a failover whose pause was lifted does not start another", func() pauseInput {
			x := in(selected, master, truthSelf, false, time.Second)
			x.LiftedEpoch = 7
			return x
		}(), pauseNone},
		{"a newer failover after a lifted one pauses", func() pauseInput {
			x := in(selected, master, truthSelf, false, time.Second)
			x.LiftedEpoch = 6
			return x
		}(), pauseHold},
		{"paused, running: renew", in(selected, master, truthSelf, true, time.Second), pauseHold},
		{"paused, promoted, not yet announced: renew", in(selected, master, truthOther, true, time.Second), pauseHold},
		{"paused, aborted: lift", in(aborted, master, truthSelf, true, time.Second), pauseLift},
		{"paused, announced, truth there: demote", in(announced, master, truthOther, true, 2*time.Second), pauseDemote},
		{"paused, announced, truth not yet there: renew", in(announced, master, truthSelf, true, 2*time.Second), pauseHold},
		{"paused, now a replica: lift", in(announced, replica, truthOther, true, 2*time.Second), pauseLift},
		{"paused, Redis unreadable: renew", func() pauseInput {
			p := in(selected, roleInfo{}, truthSelf, true, time.Second)
			p.LocalErr = errTest
			return p
		}(), pauseHold},
		{"paused, silent past twice the timeout, Sentinel names this node: lift", in(selected, master, truthSelf, true, 7*time.Second), pauseLift},
		{"paused, silent past the timeout only: renew", in(selected, master, truthSelf, true, 4*time.Second), pauseHold},
		{"paused, no promotion within half of down-after: lift", in(withDownAfter(selected, time.Second), master, truthSelf, true, 501*time.Millisecond), pauseLift},
		{"paused, promoted, past half of down-after: renew", in(withDownAfter(selected, time.Second), master, truthOther, true, 700*time.Millisecond), pauseHold},
		{"paused, the leader saw the promotion: demote", in(promotedSeen, master, truthOther, true, 700*time.Millisecond), pauseDemote},
		{"paused, promoted but the leader has not seen it: renew", in(selected, master, truthOther, true, 100*time.Millisecond), pauseHold},
		{"paused past the bound: lift", in(announced, master, truthSelf, true, 3*time.Second+pauseLinger+time.Millisecond), pauseLift},
		{"paused, a newer failover of another master: lift", in(FailoverView{Epoch: 8, Old: other, Started: t0, Timeout: time.Second}, master, truthSelf, true, time.Second), pauseLift},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, why := pauseStep(tc.in)
			if got != tc.want {
				t.Errorf("pauseStep = %d (%q), want %d", got, why, tc.want)
			}
		})
	}
}

func withDownAfter(fo FailoverView, d time.Duration) FailoverView {
	fo.DownAfter = d
	return fo
}

type testError string

func (e testError) Error() string { return string(e) }

const errTest = testError("i/o timeout")

// TestPausedDecision: the master tag goes with the pause; other roles stay.
func TestPausedDecision(t *testing.T) {
	m := Decision{Role: consulname.RoleMaster, Status: api.HealthPassing, Why: "master, confirmed by Sentinel"}
	d := pausedDecision(m, "Sentinel is failing this master over")
	if d.Role != consulname.RoleUnknown || d.Status != api.HealthCritical || !strings.HasPrefix(d.Why, "writes paused") {
		t.Errorf("paused master: %+v", d)
	}
	r := Decision{Role: consulname.RoleReplica, Status: api.HealthPassing}
	if got := pausedDecision(r, "x"); got != r {
		t.Errorf("paused replica: %+v, want it unchanged", got)
	}
}
