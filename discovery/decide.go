package discovery

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// LocalState is what one local Redis says about itself (ROLE and INFO).
type LocalState struct {
	Reachable bool
	Err       string // why it is unreachable
	Loading   bool   // loading its dataset: it answers nothing useful

	Role       string // RoleMaster, RoleReplica, or what ROLE said (e.g. "sentinel")
	MasterAddr string // replica: the master it follows (host:port)
	LinkUp     bool   // replica: master_link_status is up
	LinkDown   time.Duration
	Offset     int64 // replication offset
	Replicas   int   // master: connected replicas
	Version    string

	// LastRole is the role this instance last had in Consul. While Redis
	// cannot be read it is kept, so a restart or a hang does not churn the
	// tags: the critical status alone keeps the node out of DNS.
	LastRole string
}

// Decision is the role and check of one Redis in Consul.
type Decision struct {
	Role       string // RoleMaster, RoleReplica or RoleUnknown (no role tag)
	Status     string // api.HealthPassing, api.HealthWarning or api.HealthCritical
	Why        string // check output
	MasterAddr string // replica: the master it follows, for Meta
}

// Decide is the split-brain guard of DESIGN §6: it turns what a Redis says
// about itself and the Sentinel truth for its master name into the role and
// status Consul must show. self are the addresses of the node (the
// announce address, and the address the agent connects to); they are
// compared with the truth after normalization, without DNS.
//
//   - master, and the truth names this node: master, passing.
//   - master, and the truth names another address: no role tag, critical.
//     An old master that came back must never answer master.redis. The same
//     holds when the truth is stale but names another node.
//   - master, and no truth (no majority, no fresh event): master, warning.
//   - replica: replica; warning while its link is down, while the truth is
//     unknown, or while it follows another node than the truth.
//   - unreachable or loading: critical, keeping the last role, except that a
//     last role of master is dropped once the truth names another node.
//   - anything else (ROLE says sentinel): no role tag, critical.
func Decide(local LocalState, truth Master, self ...string) Decision {
	isSelf := func(addr string) bool {
		for _, s := range self {
			if sameAddr(addr, s) {
				return true
			}
		}
		return false
	}
	truthNote := func() string {
		if !truth.Known() {
			return ""
		}
		return fmt.Sprintf(" (sentinel %s, %d/%d agree)", truth.Source, truth.Agree, truth.Total)
	}
	if !local.Reachable || local.Loading {
		role := local.LastRole
		if role != RoleMaster && role != RoleReplica {
			role = RoleUnknown
		}
		if role == RoleMaster && truth.Addr != "" && !isSelf(truth.Addr) {
			role = RoleUnknown
		}
		why := "redis unreachable: " + local.Err
		if local.Reachable {
			why = "redis is loading its dataset"
		}
		return Decision{Role: role, Status: api.HealthCritical, Why: why}
	}
	switch local.Role {
	case RoleMaster:
		facts := fmt.Sprintf("replicas=%d offset=%d", local.Replicas, local.Offset)
		switch {
		case truth.Known() && isSelf(truth.Addr):
			return Decision{Role: RoleMaster, Status: api.HealthPassing,
				Why: "master, confirmed by Sentinel" + truthNote() + "; " + facts}
		case truth.Known():
			return Decision{Role: RoleUnknown, Status: api.HealthCritical,
				Why: fmt.Sprintf("claims master but Sentinel names %s%s; not advertised as master until Sentinel converts it; %s",
					truth.Addr, truthNote(), facts)}
		case truth.Addr != "" && !isSelf(truth.Addr):
			return Decision{Role: RoleUnknown, Status: api.HealthCritical,
				Why: fmt.Sprintf("claims master but the last known Sentinel truth (stale, %d/%d sentinels reporting) names %s; %s",
					truth.Reporting, truth.Total, truth.Addr, facts)}
		default:
			return Decision{Role: RoleMaster, Status: api.HealthWarning,
				Why: fmt.Sprintf("master; Sentinel truth unknown (%d/%d sentinels reporting, no majority, no fresh event): keeping the local role; %s",
					truth.Reporting, truth.Total, facts)}
		}
	case RoleReplica:
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
		case !sameAddr(local.MasterAddr, truth.Addr):
			warn = append(warn, "Sentinel names "+truth.Addr+" as master")
		}
		if len(warn) > 0 {
			return Decision{Role: RoleReplica, Status: api.HealthWarning, MasterAddr: local.MasterAddr,
				Why: fmt.Sprintf("replica of %s, offset=%d; %s", local.MasterAddr, local.Offset, strings.Join(warn, "; "))}
		}
		return Decision{Role: RoleReplica, Status: api.HealthPassing, MasterAddr: local.MasterAddr,
			Why: fmt.Sprintf("replica of %s, link up, offset=%d%s", local.MasterAddr, local.Offset, truthNote())}
	default:
		return Decision{Role: RoleUnknown, Status: api.HealthCritical,
			Why: fmt.Sprintf("not a Redis data node: ROLE says %q", local.Role)}
	}
}
