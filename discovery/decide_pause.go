package discovery

import (
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// pauseInput is what pauseStep decides on: the newest failover the Monitor
// followed for this node's master name, the truth, what the local Redis
// says, and the pause this node holds.
type pauseInput struct {
	Failover    FailoverView
	HasFailover bool
	Truth       Master
	Local       roleInfo
	LocalErr    error // ROLE could not be read
	Names       Names
	Now         time.Time

	Paused      bool
	PausedEpoch uint64
	PausedSince time.Time
	// LiftedEpoch is the failover whose pause was last lifted: it is not
	// paused again.
	LiftedEpoch uint64
}

// pauseAction is what pauseStep rules.
type pauseAction int

const (
	pauseNone   pauseAction = iota // nothing to do (not paused, no reason to be)
	pauseHold                      // pause now, or renew the pause held
	pauseLift                      // lift the pause held
	pauseDemote                    // renew, and make the local Redis a replica of the announced master
)

// pauseLinger bounds a pause past its failover's timeout: Sentinel turns an
// old master that answered into a replica of the new one some seconds
// after it announced the switch; a pause that outlives this is lifted, so
// that an agent cannot keep a master paused for ever.
const pauseLinger = 30 * time.Second

// pauseStep is the zero-loss rule for the master of a planned failover.
//
//   - Not paused: pause when the leader of a running failover names this
//     node the master being failed over (from +elected-leader on, before it
//     can select and promote a replica), the selected replica is not this
//     node, and the local Redis still says master. Every write it would
//     acknowledge from then on could be lost when it resyncs as a replica.
//   - Paused: lift at once when the local Redis is a replica (Sentinel
//     reconfigured it: it accepts no writes and lost nothing acknowledged
//     during the pause), when the failover aborted, or when twice the
//     failover timeout has passed since the election (failoverSpan) with
//     the truth naming this node still, or when no promotion has come
//     within pauseBudget (half of down-after-milliseconds): a longer pause
//     makes the Sentinels take the master for down. Hold (renew)
//     while the failover runs, and after it was announced while the local
//     Redis is still master. Once the leader has seen the promotion
//     (+promoted-slave: it cannot abort any more) or a +switch-master has
//     been announced, and the truth names that node, make the local Redis a
//     replica of it
//     (REPLICAOF, as Redis's own FAILOVER command does): Sentinel would do
//     the same, but its reconfiguration shares a connection with its hello
//     PUBLISH, which the pause holds back, so it cannot while paused. Past
//     failover-timeout + pauseLinger from the start of the pause, lift: the
//     agent never keeps a master paused without a bound.
//   - A failover whose pause was lifted is not paused again.
//   - Unreadable Redis while paused: hold; the renewal either works or
//     fails, and a Redis that restarted is not paused anyway.
func pauseStep(in pauseInput) (pauseAction, string) {
	fo := in.Failover
	if !in.Paused {
		switch {
		case !in.HasFailover || fo.Outcome != FailoverRunning || in.LocalErr != nil:
			return pauseNone, ""
		case in.LiftedEpoch != 0 && fo.Epoch == in.LiftedEpoch:
			// Lifted for this failover already (no promotion within the
			// budget, most often): pausing again would make the master
			// look dead to the Sentinels again. Found by the chaos
			// campaign: a stalled failover re-paused its old master three
			// times within 2 s.
			return pauseNone, ""
		case !in.Names.IsSelf(fo.Old) || (fo.Selected != "" && in.Names.IsSelf(fo.Selected)):
			return pauseNone, ""
		case in.Local.Role != consulname.RoleMaster:
			return pauseNone, ""
		case fo.Timeout > 0 && in.Now.After(fo.Started.Add(failoverSpan(fo.Timeout))):
			return pauseNone, ""
		}
		return pauseHold, fmt.Sprintf("Sentinel is failing this master over (epoch %d, %s)", fo.Epoch, fo.Phase)
	}
	timeout := fo.Timeout
	if timeout <= 0 {
		timeout = defaultFailoverTimeout
	}
	switch {
	case in.LocalErr == nil && in.Local.Role == consulname.RoleReplica:
		return pauseLift, "it is a replica of " + in.Local.MasterAddr + " now"
	case in.Now.After(in.PausedSince.Add(timeout + pauseLinger)):
		return pauseLift, fmt.Sprintf("paused for %s, past the failover timeout (%s) and %s more: lifting it although Redis is still %s",
			in.Now.Sub(in.PausedSince).Round(time.Millisecond), timeout, pauseLinger, orDash(in.Local.Role))
	case !in.HasFailover:
		return pauseHold, ""
	case fo.Epoch != in.PausedEpoch && !in.Names.IsSelf(fo.Old):
		return pauseLift, fmt.Sprintf("a newer failover (epoch %d) concerns %s", fo.Epoch, fo.Old)
	case fo.Outcome == FailoverAborted:
		return pauseLift, "the failover aborted (" + fo.Why + ")"
	case in.LocalErr == nil && in.Local.Role == consulname.RoleMaster && in.Truth.Known() && !in.Names.IsSelf(in.Truth.Addr) &&
		((fo.Outcome == FailoverAnnounced && in.Names.Same(in.Truth.Addr, fo.Why)) ||
			(fo.Outcome == FailoverRunning && leaderSawPromotion[fo.Phase] && in.Names.Same(in.Truth.Addr, fo.Selected))):
		return pauseDemote, in.Truth.Addr
	case (!in.Truth.Known() || in.Names.IsSelf(in.Truth.Addr)) && in.Now.Sub(in.PausedSince) > pauseBudget(fo.DownAfter):
		return pauseLift, fmt.Sprintf("no promotion within %s of the pause: lifting it before the Sentinels take the silent master for down", pauseBudget(fo.DownAfter))
	case fo.Outcome == FailoverRunning && in.Now.After(fo.Started.Add(failoverSpan(timeout))) && in.Truth.Known() && in.Names.IsSelf(in.Truth.Addr):
		return pauseLift, "the failover timed out and Sentinel still names this node"
	}
	return pauseHold, ""
}

// leaderSawPromotion are the leader's events that say it saw the selected
// replica take the master role: from then on Sentinel cannot abort the
// failover, so the old master can be made a replica of it.
var leaderSawPromotion = map[string]bool{
	"+promoted-slave": true, "+failover-state-reconf-slaves": true,
	"+failover-end": true, "+failover-end-for-timeout": true,
}

// pauseBudget is how long a pause may wait for the promotion. A paused
// master holds back the Sentinels' hello PUBLISH, and their PINGs wait
// behind it on the same link: past down-after-milliseconds they take it for
// down and may start a failover of their own. Half of it (Sentinel's
// default, 30s, when unknown) leaves the margin.
func pauseBudget(downAfter time.Duration) time.Duration {
	if downAfter <= 0 {
		downAfter = 30 * time.Second
	}
	return downAfter / 2
}

// failoverSpan is how long after +elected-leader a failover that went
// silent may still promote its replica: Sentinel gives the promotion itself
// failover-timeout from the moment it sent REPLICAOF NO ONE, which comes
// after the selection, so one timeout from the election is too short.
func failoverSpan(timeout time.Duration) time.Duration { return 2 * timeout }

// pausedDecision is the decision for a Redis whose writes the agent paused:
// no role tag, critical, so that DNS stops answering it as master at the
// moment it stops acknowledging writes. A paused Redis that is no longer a
// master (it became a replica) keeps what Decide said.
func pausedDecision(d Decision, why string) Decision {
	if d.Role != consulname.RoleMaster {
		return d
	}
	return Decision{Role: consulname.RoleUnknown, Status: api.HealthCritical,
		Why: "writes paused (CLIENT PAUSE WRITE): " + why + "; master tag withdrawn until Sentinel makes it a replica; " + d.Why}
}
