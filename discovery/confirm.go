package discovery

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	retry "github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// +switch-master confirmation: the node the event names is asked ROLE until
// it says master (or ConfirmWindow passes); only then does the event count.

type pendingSwitch struct {
	addr string
	at   time.Time
}

type confirmResult struct {
	name, old, addr string
	at              time.Time
	err             error // nil: the node says it is a master

	// promotion: the selected replica of failover epoch, not a +switch-master.
	promotion bool
	epoch     uint64

	// stale says why the switch is older than a Sentinel's configuration
	// (supersededBy); "" if it is not.
	stale string
}

// handleSwitch starts confirming a +switch-master unless it says nothing
// new: the truth, a pending override or a running confirmation already name
// that address (the same switch seen from another Sentinel).
func (m *Monitor) handleSwitch(ctx context.Context, e Event, msg sentinelMsg) {
	name, to := e.MasterName, e.MasterAddr
	if fo := m.failovers[name]; fo != nil && addr.Same(fo.old, to) {
		// A switch to the very node the running failover is moving away
		// from is not its outcome: it is a late announcement of an older
		// failover (a leader that finished by timeout), and its ROLE check
		// may well pass, as that node can have come back a master. Found
		// by TestStartBesideReturningOldMaster: such a switch gave the
		// master tag to the old master that had just restarted. The
		// Sentinels' majority decides.
		m.log.Warn("ignoring +switch-master to the master a newer failover is replacing", "master_name", name,
			"to", to, "epoch", fo.epoch, "sentinel", msg.from)
		m.opts.Journal.Add(telemetry.Event{
			Kind: telemetry.KindTruth, Type: "switch-stale", Subject: name, Level: "warn",
			Detail: fmt.Sprintf("%s announced %s, the master failover epoch %d is replacing", msg.from, to, fo.epoch),
		})
		return
	}
	if fo := m.failovers[name]; fo != nil {
		if fo.promoted && !addr.Same(fo.selected, to) {
			m.undoPromotion(name, "+switch-master names "+to)
		}
		delete(m.failovers, name) // announced: nothing left to follow
		m.publishFailover(name, nil, FailoverAnnounced, to)
	}
	if p, ok := m.pending[name]; ok && addr.Same(p.addr, to) {
		return
	}
	if ts := m.truth[name]; ts != nil {
		if addr.Same(ts.override, to) || (ts.override == "" && ts.cur.Known() && addr.Same(ts.cur.Addr, to)) {
			return
		}
	}
	if m.afterTimeout(ctx, name, to, msg) {
		return
	}
	m.log.Info("+switch-master", "master_name", name, "from", e.OldMasterAddr, "to", to, "sentinel", msg.from)
	m.pending[name] = pendingSwitch{addr: to, at: msg.at}
	clients := m.sentinelClients()
	m.goSend(func() {
		var views map[string]masterInfo
		var wg sync.WaitGroup
		wg.Go(func() { views = m.sentinelConfigs(ctx, clients, name) })
		err := m.confirmMaster(ctx, to, msg.at.Add(m.opts.ConfirmWindow))
		wg.Wait()
		res := confirmResult{name: name, old: e.OldMasterAddr, addr: to, at: msg.at, err: err, stale: supersededBy(views, msg.from, to)}
		select {
		case m.confirms <- res:
		case <-ctx.Done():
		}
	})
}

// confirmMaster asks node for ROLE until it says master or deadline passes.
func (m *Monitor) confirmMaster(ctx context.Context, node string, deadline time.Time) error {
	return m.askRole(ctx, node, deadline, retry.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond})
}

// askRole asks node for ROLE, waiting bo between attempts, until it says
// master (nil) or deadline passes (the last answer or error).
func (m *Monitor) askRole(ctx context.Context, node string, deadline time.Time, bo retry.Backoff) error {
	c := redis.NewClient(failFast(node, m.opts.RedisUsername, m.opts.RedisPassword, m.opts.RedisTLSConfig, m.opts.QueryTimeout, 1))
	defer c.Close()
	for {
		qctx, cancel := context.WithTimeout(ctx, m.opts.QueryTimeout)
		role, err := readRole(qctx, c)
		cancel()
		if err == nil && role.Role == consulname.RoleMaster {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("ROLE says %s", role.Role)
		}
		wait := bo.Next()
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// applyConfirm applies a confirmed +switch-master at once, or reports why
// it was ignored (the majority decides then).
func (m *Monitor) applyConfirm(ctx context.Context, c confirmResult) {
	if c.promotion {
		m.applyPromotion(c)
		return
	}
	p, ok := m.pending[c.name]
	if ok && addr.Same(p.addr, c.addr) {
		delete(m.pending, c.name)
	}
	// Confirmations can finish out of order: a switch older than one
	// already applied, or than one still being confirmed, is history.
	if c.at.Before(m.switched[c.name]) || (ok && c.at.Before(p.at)) {
		return
	}
	if c.stale != "" {
		m.log.Warn("ignoring +switch-master: a Sentinel holds a newer configuration", "master_name", c.name, "addr", c.addr, "why", c.stale)
		m.opts.Journal.Add(telemetry.Event{
			Kind: telemetry.KindTruth, Type: "switch-stale", Subject: c.name, Level: "warn",
			Detail: c.stale,
		})
		m.requestPoll(ctx)
		return
	}
	if c.err != nil {
		m.log.Warn("ignoring +switch-master: the new master does not confirm", "master_name", c.name, "addr", c.addr, "error", c.err)
		m.opts.Journal.Add(telemetry.Event{
			Kind: telemetry.KindTruth, Type: "switch-unconfirmed", Subject: c.name, Level: "warn",
			Detail: fmt.Sprintf("%s did not confirm it is a master: %v", c.addr, c.err),
		})
		return
	}
	m.truthOf(c.name).switchTo(c.old, c.addr, c.at)
	m.switched[c.name] = c.at
	m.reevaluate(c.name, c.at)
	m.requestPoll(ctx)
}
