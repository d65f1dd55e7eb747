package discovery

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	retry "github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Failovers in progress: the leader Sentinel publishes every step of a
// failover (+new-epoch, +try-failover, +elected-leader, +selected-slave,
// +promoted-slave, -failover-abort-*, +failover-end) before any Sentinel
// announces it with +switch-master. With FollowPromotion the Monitor follows
// each master name's failover per epoch, asks the selected replica ROLE at
// a short interval, and makes it the truth (SourcePromotion) the moment it
// answers master; an abort, a newer failover or a switch to another node
// undoes that at once, and truthState.eval undoes it when a majority still
// names the old master past the failover timeout.

// failover is one master name's failover as its leader publishes it.
type failover struct {
	epoch    uint64
	leader   string // the Sentinel that published +elected-leader (its address)
	old      string // the master being failed over
	selected string // the replica the leader selected, "" until +selected-slave
	phase    string // the last event of the leader, e.g. "+promoted-slave"
	started  time.Time
	promoted bool // the selected replica answered ROLE master and is the truth
}

// defaultFailoverTimeout is Sentinel's own default, used until a SENTINEL
// MASTERS reply gave the master's failover-timeout.
const defaultFailoverTimeout = 3 * time.Minute

// failoverEvents are the channels followFailover handles.
var failoverEvents = map[string]bool{
	"+new-epoch": true, "+try-failover": true, "+elected-leader": true,
	"+selected-slave": true, "+failover-state-send-slaveof-noone": true,
	"+failover-state-wait-promotion": true, "+promoted-slave": true,
	"+failover-state-reconf-slaves": true, "+failover-end": true, "+failover-end-for-timeout": true,
	"-failover-abort-not-elected": true, "-failover-abort-no-good-slave": true,
	"-failover-abort-slave-timeout": true,
}

// followFailover records one failover event from msg.from. Only the leader
// of the newest epoch moves a failover on; every Sentinel's +new-epoch is
// kept because Sentinel names the epoch in that event only.
func (m *Monitor) followFailover(ctx context.Context, e Event, msg sentinelMsg) {
	if e.Type == "+new-epoch" {
		if n, err := strconv.ParseUint(e.Extra, 10, 64); err == nil {
			m.epochs[addr.Normalize(msg.from)] = n
		}
		return
	}
	name := e.MasterName
	if name == "" {
		return
	}
	epoch := m.epochs[addr.Normalize(msg.from)]
	fo := m.failovers[name]
	switch {
	case e.Type == "+elected-leader":
		if fo != nil && epoch < fo.epoch {
			return // an older election, reported late
		}
		if fo != nil && fo.promoted {
			m.undoPromotion(name, fmt.Sprintf("a newer failover (epoch %d) started", epoch))
		}
		m.failovers[name] = &failover{epoch: epoch, leader: msg.from, old: e.MasterAddr, phase: e.Type, started: msg.at}
		m.publishFailover(name, m.failovers[name], "", "")
		m.log.Info("failover: leader elected", "master_name", name, "epoch", epoch, "leader", msg.from, "old_master", e.MasterAddr)
	case fo == nil || !addr.Same(fo.leader, msg.from):
		return // not the leader of the failover being followed
	case e.Type == "+selected-slave":
		fo.selected, fo.phase = e.InstanceAddr, e.Type
		m.log.Info("failover: replica selected", "master_name", name, "epoch", fo.epoch, "replica", e.InstanceAddr)
		m.publishFailover(name, fo, "", "")
		m.confirmPromotion(ctx, name, fo)
	case strings.HasPrefix(e.Type, "-failover-abort-"):
		delete(m.failovers, name)
		m.log.Warn("failover aborted", "master_name", name, "epoch", fo.epoch, "reason", e.Type)
		m.publishFailover(name, nil, FailoverAborted, e.Type)
		if fo.promoted {
			m.undoPromotion(name, "the failover aborted ("+e.Type+")")
		}
	default:
		fo.phase = e.Type
		m.log.Debug("failover phase", "master_name", name, "epoch", fo.epoch, "phase", e.Type)
		m.publishFailover(name, fo, "", "")
	}
}

// confirmPromotion asks the selected replica ROLE at a short interval
// until it answers master or the failover timeout passes.
func (m *Monitor) confirmPromotion(ctx context.Context, name string, fo *failover) {
	if !m.opts.FollowPromotion {
		return
	}
	epoch, node, old, at := fo.epoch, fo.selected, fo.old, fo.started
	deadline := at.Add(m.failoverTimeout(name))
	m.goSend(func() {
		err := m.askRole(ctx, node, deadline, retry.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond})
		select {
		case m.confirms <- confirmResult{name: name, old: old, addr: node, at: time.Now(), err: err, epoch: epoch, promotion: true}:
		case <-ctx.Done():
		}
	})
}

// applyPromotion makes a confirmed promotion the truth, unless its failover
// was aborted or superseded meanwhile.
func (m *Monitor) applyPromotion(c confirmResult) {
	fo := m.failovers[c.name]
	if fo == nil || fo.epoch != c.epoch || !addr.Same(fo.selected, c.addr) {
		return // aborted, superseded or already announced
	}
	if c.err != nil {
		m.log.Warn("failover: the selected replica never answered ROLE master", "master_name", c.name, "replica", c.addr, "error", c.err)
		return
	}
	fo.promoted = true
	m.publishFailover(c.name, fo, "", "")
	m.log.Info("failover: promotion confirmed", "master_name", c.name, "epoch", c.epoch, "new_master", c.addr, "old_master", c.old)
	m.opts.Journal.Add(telemetry.Event{
		Time: c.at, Kind: telemetry.KindTruth, Type: "promotion", Subject: c.name,
		Detail: fmt.Sprintf("%s answered ROLE master in failover epoch %d (after %s)", c.addr, c.epoch, fo.phase),
	})
	deadline := fo.started.Add(m.failoverTimeout(c.name))
	m.truthOf(c.name).promoteTo(c.old, c.addr, c.at, deadline)
	m.reevaluate(c.name, c.at)
	// Poll at the deadline rather than at the next resync: a majority
	// still naming the old master then undoes the promotion, and every
	// agent should undo it at that moment, not up to a resync apart
	// (found by the chaos campaign: DNS kept a stalled failover's replica
	// 1 s after the twemproxy agent had gone back to the old master).
	time.AfterFunc(time.Until(deadline)+time.Millisecond, func() {
		select {
		case m.pollNow <- struct{}{}:
		default:
		}
	})
}

// undoPromotion drops the promotion of name and recomputes its truth at once.
func (m *Monitor) undoPromotion(name, why string) {
	if fo := m.failovers[name]; fo != nil {
		fo.promoted = false
	}
	ts := m.truth[name]
	if ts == nil || ts.promoted == "" {
		return
	}
	m.log.Warn("failover: promotion undone", "master_name", name, "addr", ts.promoted, "why", why)
	m.opts.Journal.Add(telemetry.Event{
		Time: time.Now(), Kind: telemetry.KindTruth, Type: "promotion-undone", Subject: name, Level: "warn",
		Detail: fmt.Sprintf("%s: %s", ts.promoted, why),
	})
	ts.unpromote()
	m.reevaluate(name, time.Now())
}

// failoverTimeout is name's failover-timeout as the Sentinels last reported it.
func (m *Monitor) failoverTimeout(name string) time.Duration {
	if d := m.timeouts[name]; d > 0 {
		return d
	}
	return defaultFailoverTimeout
}
