package discovery

import (
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// Verdict is the judgement on one shard (one Sentinel master name) as
// Consul shows it beside the Sentinel truth. It is the read side of the
// guarantee Decide keeps on the write side: Decide never tags a second
// master, the verdict says when the registry shows one anyway. It is not a
// Consul check state: those are passing, warning, critical per node.
type Verdict string

// Verdicts, from best to worst.
const (
	// VerdictOK: one master answers in DNS, it is the Sentinel master and
	// passing, every replica is linked and every Sentinel agrees.
	VerdictOK Verdict = "ok"
	// VerdictDegraded: one master answers, but something would make the
	// next failover worse or show the registry lagging the truth.
	VerdictDegraded Verdict = "degraded"
	// VerdictDown: no master answers in DNS; clients cannot write.
	VerdictDown Verdict = "down"
	// VerdictSplitBrain: more than one master answers in DNS; clients may
	// write to both.
	VerdictSplitBrain Verdict = "split-brain"
)

// worse reports whether v is worse than w.
func (v Verdict) worse(w Verdict) bool { return v.rank() > w.rank() }

func (v Verdict) rank() int {
	switch v {
	case VerdictOK:
		return 0
	case VerdictDegraded:
		return 1
	case VerdictDown:
		return 2
	case VerdictSplitBrain:
		return 3
	}
	return 1
}

// ShardNode is one registered Redis of a shard as Consul reports it.
type ShardNode struct {
	Addr string // host:port
	// Status is the node's Consul check state (the worst of its service and
	// node checks); Output is why.
	Status, Output string
}

// ShardState is what a verdict is given on: a shard's registered nodes,
// sorted into what DNS answers, and the Sentinel truth.
type ShardState struct {
	// Masters are the nodes Consul DNS answers for the shard's master name:
	// see AnswersAsMaster.
	Masters []ShardNode
	// Replicas carry the replica tag, whatever their check state.
	Replicas []ShardNode
	// Other are registered with neither: critical masters, nodes with no
	// role tag.
	Other []ShardNode
	// Truth is the Sentinel truth the reader holds for the shard; nil when
	// it holds none (an agent that follows no Sentinel).
	Truth *Master
}

// AnswersAsMaster reports whether Consul DNS answers a Redis with these tags
// and this aggregated check state for master.<service>.service.consul: it
// carries the master tag and its checks are not critical. More than one
// such node in a shard is a split brain.
func AnswersAsMaster(tags []string, checkStatus string) bool {
	if checkStatus == api.HealthCritical {
		return false
	}
	for _, t := range tags {
		if t == consulname.RoleMaster {
			return true
		}
	}
	return false
}

// ShardVerdict judges a shard and says why in words, in the order found, so
// that the dashboard, `status` and scripts judge a shard the same way. The
// rules, worst wins:
//
//   - more than one master answers in DNS: split-brain;
//   - none does: down (naming the Sentinel master, if any);
//   - the one master is not the Sentinel master, or not passing: degraded;
//   - the truth is stale (no Sentinel majority), or not every known
//     Sentinel names it: degraded;
//   - a replica not passing, a node with no role, or no replica at all
//     beside a master (nothing to fail over to): degraded.
//
// Addresses are compared with addr.Same, as Decide compares them.
func ShardVerdict(s ShardState) (Verdict, []string) {
	verdict := VerdictOK
	var problems []string
	problem := func(v Verdict, format string, args ...any) {
		if v.worse(verdict) {
			verdict = v
		}
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	truth := ""
	if s.Truth != nil {
		truth = s.Truth.Addr
	}
	switch len(s.Masters) {
	case 0:
		if truth != "" {
			problem(VerdictDown, "no master in Consul (Sentinel says %s)", truth)
		} else {
			problem(VerdictDown, "no master in Consul")
		}
	case 1:
		m := s.Masters[0]
		if truth != "" && !addr.Same(m.Addr, truth) {
			problem(VerdictDegraded, "Consul master %s is not the Sentinel master %s", m.Addr, truth)
		}
		if m.Status != api.HealthPassing {
			problem(VerdictDegraded, "master %s is %s: %s", m.Addr, m.Status, textOrDash(m.Output))
		}
	default:
		addrs := make([]string, len(s.Masters))
		for i, m := range s.Masters {
			addrs[i] = m.Addr
		}
		problem(VerdictSplitBrain, "split brain: %d masters in Consul (%s)", len(s.Masters), strings.Join(addrs, ", "))
	}
	if t := s.Truth; t != nil {
		switch {
		case t.Source == SourceStale:
			problem(VerdictDegraded, "no Sentinel majority: showing the last known master")
		case t.Total > 0 && t.Agree < t.Total:
			problem(VerdictDegraded, "%d/%d Sentinels agree", t.Agree, t.Total)
		}
	}
	for _, r := range s.Replicas {
		if r.Status != api.HealthPassing {
			problem(VerdictDegraded, "replica %s is %s: %s", r.Addr, r.Status, textOrDash(r.Output))
		}
	}
	for _, o := range s.Other {
		problem(VerdictDegraded, "%s is %s: %s", o.Addr, textOrDash(o.Status), textOrDash(o.Output))
	}
	if len(s.Replicas) == 0 && len(s.Masters) > 0 {
		problem(VerdictDegraded, "no replica registered: nothing to fail over to")
	}
	return verdict, problems
}

// textOrDash shows an empty check output as a dash, so a problem line
// never ends in a bare colon.
func textOrDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "—"
	}
	return s
}
