package discovery

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// LocalState is what one local Redis says about itself (ROLE and INFO).
type LocalState struct {
	Reachable bool
	Err       string // why it is unreachable
	Loading   bool   // loading its dataset: it answers nothing useful

	Role       string // consulname.RoleMaster, consulname.RoleReplica, or what ROLE said (e.g. "sentinel")
	MasterAddr string // replica: the master it follows (host:port)
	LinkUp     bool   // replica: master_link_status is up
	LinkDown   time.Duration
	Offset     int64 // replication offset
	Replicas   int   // master: connected replicas
	Version    string

	// LastRole is the role this instance last had in Consul. While Redis
	// cannot be read it is kept, so a restart or a hang does not churn the
	// tags: the critical status alone keeps the node out of DNS. It is also
	// what "holds the master tag" means: only a node whose LastRole is master
	// may keep that tag while the Sentinel truth is unknown.
	LastRole string
}

// Decision is the role and check of one Redis in Consul.
type Decision struct {
	Role       string // consulname.RoleMaster, consulname.RoleReplica or consulname.RoleUnknown (no role tag)
	Status     string // api.HealthPassing, api.HealthWarning or api.HealthCritical
	Why        string // check output
	MasterAddr string // replica: the master it follows, for Meta
}

// Decide is the split-brain guard: it turns what a Redis says about itself
// and the Sentinel truth for its master name into the role and status Consul
// must show. names tells which addresses name this node and which name one
// node (Sentinel may report a node by a hostname the config gives as an IP):
// addresses are never compared as text.
//
//   - master, and the truth names this node: master, passing.
//   - master, and the truth names another node: no role tag, critical.
//     An old master that came back must never answer master.redis. The same
//     holds when the truth is stale but names another node.
//   - master, and no truth (no majority, no fresh event, or none learnt
//     yet): a node that holds the master tag (LastRole) keeps it, warning
//     (guardStale bounds how long); a node that does not hold it never gains
//     it, not at start-up and not after a handoff wait: no role tag,
//     warning. An old master that restarts beside its restarting agent is
//     exactly such a node until the first truth names the new master.
//   - replica: replica; warning while its link is down, while the truth is
//     unknown, or while it follows another node than the truth.
//   - unreachable or loading: critical, keeping the last role, except that a
//     last role of master is dropped once the truth names another node.
//   - anything else (ROLE says sentinel): no role tag, critical.
func Decide(local LocalState, truth Master, names Names) Decision {
	truthNote := func() string {
		if !truth.Known() {
			return ""
		}
		return fmt.Sprintf(" (sentinel %s, %d/%d agree)", truth.Source, truth.Agree, truth.Total)
	}
	if !local.Reachable || local.Loading {
		role := local.LastRole
		if role != consulname.RoleMaster && role != consulname.RoleReplica {
			role = consulname.RoleUnknown
		}
		if role == consulname.RoleMaster && truth.Addr != "" && !names.IsSelf(truth.Addr) {
			role = consulname.RoleUnknown
		}
		why := "redis unreachable: " + local.Err
		if local.Reachable {
			why = "redis is loading its dataset"
		}
		return Decision{Role: role, Status: api.HealthCritical, Why: why}
	}
	switch local.Role {
	case consulname.RoleMaster:
		return decideMaster(local, truth, names, truthNote())
	case consulname.RoleReplica:
		var warn []string
		if !local.LinkUp {
			w := "master_link_status down"
			if local.LinkDown > 0 {
				w += " for " + local.LinkDown.String()
			}
			warn = append(warn, w)
		}
		switch {
		case !truth.Known():
			warn = append(warn, fmt.Sprintf("Sentinel truth unknown (%d/%d sentinels reporting)", truth.Reporting, truth.Total))
		case !names.Same(local.MasterAddr, truth.Addr):
			warn = append(warn, "Sentinel names "+truth.Addr+" as master")
		}
		if len(warn) > 0 {
			return Decision{Role: consulname.RoleReplica, Status: api.HealthWarning, MasterAddr: local.MasterAddr,
				Why: fmt.Sprintf("replica of %s, offset=%d; %s", local.MasterAddr, local.Offset, strings.Join(warn, "; "))}
		}
		return Decision{Role: consulname.RoleReplica, Status: api.HealthPassing, MasterAddr: local.MasterAddr,
			Why: fmt.Sprintf("replica of %s, link up, offset=%d%s", local.MasterAddr, local.Offset, truthNote())}
	default:
		return Decision{Role: consulname.RoleUnknown, Status: api.HealthCritical,
			Why: fmt.Sprintf("not a Redis data node: ROLE says %q", local.Role)}
	}
}

// decideMaster is Decide for a Redis whose ROLE says master.
func decideMaster(local LocalState, truth Master, names Names, truthNote string) Decision {
	facts := fmt.Sprintf("replicas=%d offset=%d", local.Replicas, local.Offset)
	switch {
	case truth.Known() && names.IsSelf(truth.Addr):
		return Decision{Role: consulname.RoleMaster, Status: api.HealthPassing,
			Why: "master, confirmed by Sentinel" + truthNote + "; " + facts}
	case truth.Known():
		return Decision{Role: consulname.RoleUnknown, Status: api.HealthCritical,
			Why: fmt.Sprintf("claims master but Sentinel names %s%s; not advertised as master until Sentinel converts it; %s",
				truth.Addr, truthNote, facts)}
	case truth.Addr != "" && !names.IsSelf(truth.Addr):
		return Decision{Role: consulname.RoleUnknown, Status: api.HealthCritical,
			Why: fmt.Sprintf("claims master but the last known Sentinel truth (stale, %d/%d sentinels reporting) names %s; %s",
				truth.Reporting, truth.Total, truth.Addr, facts)}
	case local.LastRole == consulname.RoleMaster:
		return Decision{Role: consulname.RoleMaster, Status: api.HealthWarning,
			Why: fmt.Sprintf("master; Sentinel truth unknown (%d/%d sentinels reporting, no majority, no fresh event): keeping the master tag it holds; %s",
				truth.Reporting, truth.Total, facts)}
	default:
		return Decision{Role: consulname.RoleUnknown, Status: api.HealthWarning,
			Why: fmt.Sprintf("claims master, but no Sentinel truth names it (%d/%d sentinels reporting): not advertised as master until Sentinel confirms it; %s",
				truth.Reporting, truth.Total, facts)}
	}
}

// guardStale withdraws the master tag of a master that no Sentinel
// majority has confirmed for longer than grace. Without it, an old master
// cut off from every Sentinel (and from Consul) keeps asserting "master,
// warning", and the write that reaches Consul when the partition heals puts
// it back in DNS beside the new master.
func guardStale(d Decision, unconfirmed, grace time.Duration) Decision {
	if grace < 0 || d.Role != consulname.RoleMaster || d.Status != api.HealthWarning || unconfirmed <= grace {
		return d
	}
	return Decision{Role: consulname.RoleUnknown, Status: api.HealthCritical,
		Why: fmt.Sprintf("claims master, but no Sentinel majority has confirmed it for %s (stale_master_grace %s): not advertised as master in case it is cut off during a failover; %s",
			unconfirmed.Round(time.Millisecond), grace, d.Why)}
}
