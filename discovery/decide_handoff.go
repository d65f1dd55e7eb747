package discovery

import (
	"fmt"
	"strings"
)

// Peer is another registration Consul answers for a shard's master tag.
type Peer struct {
	ID   string
	Addr string // host:port
}

func (p Peer) String() string { return p.ID + " (" + p.Addr + ")" }

// PeerView is what one read of Consul said, during a handoff, about the
// registrations DNS answers for the shard's master tag.
type PeerView struct {
	// Others are the registrations with the master tag, other than this
	// one, that Consul does not hold critical (so DNS answers them).
	Others []Peer
	// Hidden says the ACL token may not read every registration: Consul
	// left some out, so Others may not be all there is.
	Hidden bool
	// Err says why Consul could not be asked (Others and Hidden are then
	// meaningless).
	Err error
	// Alive are the Others that answered Redis when the handoff's first
	// bound passed: nodes that may still take writes.
	Alive []Peer
}

// handoffVerdict is the outcome of one handoff step.
type handoffVerdict int

const (
	// handoffWait: ask Consul again (it still answers, or may answer,
	// another master) until the handoff bound.
	handoffWait handoffVerdict = iota
	// handoffTake: Consul answers no other node; take the master tag.
	handoffTake
	// handoffTakeAnyway: the bound is over and the truth names this node;
	// take the tag, with a warning saying what Consul may still answer.
	handoffTakeAnyway
	// handoffRefuse: the truth no longer names this node; do not take the
	// tag, decide again.
	handoffRefuse
	// handoffUnknown: the bound is over and Consul could not be asked; do
	// not take the tag, register without it (saying why) and hand off
	// again shortly.
	handoffUnknown
)

// handoffStep is the rule of the master handoff. A node Sentinel promoted
// waits, before it takes the master tag, until Consul no longer answers the
// old master, so that DNS never answers both in a planned failover (where
// the old master's agent withdraws within milliseconds). One step looks at
// the truth of this moment and at what Consul answered:
//
//   - The truth is unknown or names another node: refuse. A node that does
//     not hold the master tag never gains it on an unknown truth, and a
//     handoff never takes the tag while Consul answers the node the truth
//     names: that node is the master, this one is an old master that came
//     back (or was decided on before the first truth).
//   - Consul answers no other node (a registration of this same node under
//     another ID does not count), and the answer is complete: take.
//   - Otherwise wait, up to the bound. An answer the ACL token filtered, or
//     no answer at all, is unknown, never "no old master".
//   - At the bound, Consul not answering: do not take the tag (unknown),
//     however long it has been. A read fails when the local Consul agent is
//     down or misconfigured, and then a write fails too; or when the
//     servers have no leader, and then a write is taken by the local agent
//     and reaches the catalog whenever a leader is back, perhaps before the
//     old master's withdrawal, which waits on its own agent's sync. Found
//     by the chaos campaign: a Consul server killed during a failover left
//     DNS answering both masters for 0.7 s. The caller registers without
//     the tag, with the reason, and hands off again shortly.
//   - At the bound (MasterHandoff), the truth still naming this node: if a
//     node Consul still answers is alive (it answers Redis), wait on until
//     the limit (HandoffLimit): its agent is cut off from Consul, the node
//     may still take writes, and taking the tag now would put two live
//     masters in DNS; its check expires within its agent's consul.ttl.
//     Found by the chaos campaign: an old master's agent cut off from
//     Consul during the failover left DNS answering both for 1.3 s.
//   - Otherwise, or at the limit: take anyway. What Consul still answers
//     (or may answer, unseen) is a master the Sentinels disown that is
//     dead, or whose agent is cut off past its TTL; withholding the tag on
//     would leave the shard with no master in DNS at all. The caller logs
//     why.
//
// The caller makes its decision again after the wait, with the truth and
// Redis's role of that moment, before it writes anything.
func handoffStep(truth Master, view PeerView, expired, limited bool, names Names) (handoffVerdict, string) {
	if !truth.Known() || !names.IsSelf(truth.Addr) {
		if truth.Addr == "" {
			return handoffRefuse, "the Sentinel truth is unknown"
		}
		return handoffRefuse, fmt.Sprintf("the Sentinel truth (%s) names %s, not this node", truth.Source, truth.Addr)
	}
	var others []string
	for _, p := range view.Others {
		if !names.IsSelf(p.Addr) {
			others = append(others, p.String())
		}
	}
	if view.Err == nil && !view.Hidden && len(others) == 0 {
		return handoffTake, ""
	}
	if !expired {
		return handoffWait, ""
	}
	if view.Err != nil {
		return handoffUnknown, "cannot ask consul whether the old master left its answers (" + view.Err.Error() +
			"): not taking the master tag until consul answers"
	}
	var alive []string
	for _, p := range view.Alive {
		if !names.IsSelf(p.Addr) {
			alive = append(alive, p.String())
		}
	}
	if len(alive) > 0 && !limited {
		return handoffWait, "consul still answers " + strings.Join(alive, ", ") + ", which answers Redis: waiting until its agent withdraws it or its check expires"
	}
	var why []string
	if len(others) > 0 {
		why = append(why, "consul still answers "+strings.Join(others, ", ")+
			", a master the Sentinels no longer name (its agent may be dead or cut off: it stays in DNS until its check expires)")
	}
	if view.Hidden {
		why = append(why, "the ACL token may not read every registration, so the agent cannot tell whether the old master left consul's answers")
	}
	return handoffTakeAnyway, strings.Join(why, "; ")
}
