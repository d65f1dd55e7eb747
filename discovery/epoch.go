package discovery

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// A +switch-master is one Sentinel's news, and it can be old news: the
// leader of an older failover that finished by timeout announces that
// failover's outcome although the other Sentinels already hold a newer
// configuration. Sentinel settles this by configuration epoch, the higher
// one wins, and so does the Monitor: while it checks ROLE on the node a
// switch names, it asks every Sentinel for its configuration of the master
// (SENTINEL MASTER), and a switch whose announcer holds an older epoch than
// a Sentinel that names another master is not applied.
//
// Found by TestStartBesideReturningOldMaster: an agent that started after
// the newer failover's promotion never followed that failover, so the rule
// for a switch back to a running failover's old master (handleSwitch) could
// not catch the late switch; the old master had come back a master and
// passed its ROLE check.

// supersededBy says why a +switch-master that from announced, naming to, is
// stale ("" when it is not, or when from's configuration is unknown): views
// are the Sentinels' configurations by normalised address.
func supersededBy(views map[string]masterInfo, from, to string) string {
	ann, ok := views[addr.Normalize(from)]
	if !ok {
		return ""
	}
	for _, s := range slices.Sorted(maps.Keys(views)) {
		v := views[s]
		if v.ConfigEpoch > ann.ConfigEpoch && v.Addr != "" && !addr.Same(v.Addr, to) {
			return fmt.Sprintf("Sentinel %s holds configuration epoch %d naming %s; %s, which announced %s, holds epoch %d",
				s, v.ConfigEpoch, v.Addr, from, to, ann.ConfigEpoch)
		}
	}
	return ""
}

// sentinelConfigs asks every Sentinel in parallel for its configuration of
// name; a Sentinel that does not answer within QueryTimeout is left out.
func (m *Monitor) sentinelConfigs(ctx context.Context, clients map[string]*redis.Client, name string) map[string]masterInfo {
	var mu sync.Mutex
	out := make(map[string]masterInfo, len(clients))
	var wg sync.WaitGroup
	for a, c := range clients {
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, m.opts.QueryTimeout)
			defer cancel()
			mi, err := sentinelMaster(qctx, c, name)
			if err == nil {
				mu.Lock()
				out[a] = mi
				mu.Unlock()
				return
			}
			if strings.Contains(err.Error(), "NOPERM") && !m.configNoPerm.Swap(true) {
				m.log.Warn("the Sentinel user may not run SENTINEL MASTER (grant +sentinel|master): a late +switch-master of an older failover is caught by the majority only",
					"sentinel", a, "error", err)
			}
		})
	}
	wg.Wait()
	return out
}

// sentinelClients is every Sentinel's client by normalised address, for a
// goroutine (the map itself belongs to the Run loop).
func (m *Monitor) sentinelClients() map[string]*redis.Client {
	out := make(map[string]*redis.Client, len(m.sentinels))
	for a, s := range m.sentinels {
		out[a] = s.client
	}
	return out
}

// timedOutWindow is how soon after its +failover-end-for-timeout a
// Sentinel's +switch-master counts as that failover's outcome (Sentinel
// publishes the two in the same moment).
const timedOutWindow = 2 * time.Second

func timedOutKey(sentinel, name string) string { return addr.Normalize(sentinel) + "\x00" + name }

// afterTimeout reports (and journals) a +switch-master that a Sentinel
// announced as its failover ended by timeout, when it would change the
// truth: that failover may be older than the configuration the other
// Sentinels hold, and its leader may have adopted their newer epoch without
// their address (Sentinel takes a newer epoch that names the master it has
// without switching), so that the epochs cannot tell (found by
// TestStartBesideReturningOldMaster in CI: the leader of epoch 5 announced
// its old promotion at epoch 6). The switch is left to the majority, which
// a poll asks at once. An agent that followed the failover already holds
// its promotion, and the switch changes nothing there.
func (m *Monitor) afterTimeout(ctx context.Context, name, to string, msg sentinelMsg) bool {
	k := timedOutKey(msg.from, name)
	at, ok := m.timedOut[k]
	if !ok || msg.at.Sub(at) > timedOutWindow {
		return false
	}
	delete(m.timedOut, k)
	m.log.Warn("leaving +switch-master to the Sentinels' majority: its Sentinel announced it as its failover ended by timeout",
		"master_name", name, "to", to, "sentinel", msg.from)
	m.opts.Journal.Add(telemetry.Event{
		Kind: telemetry.KindTruth, Type: "switch-stale", Subject: name, Level: "warn",
		Detail: fmt.Sprintf("%s announced %s as its failover ended by timeout: left to the majority", msg.from, to),
	})
	m.requestPoll(ctx)
	return true
}
