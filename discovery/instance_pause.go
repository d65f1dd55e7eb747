package discovery

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// The write pause of a planned failover (see pauseStep for the rule, and
// docs/ARCHITECTURE.md "Role logic" for the safety argument). The pauser
// runs beside its Instance's loop, on its own connection, so that a slow
// read or a Consul write of the Instance never delays a renewal: a pause
// that lapses between two renewals lets the old master acknowledge writes
// it will throw away.

// defaultPauseSlice is how long each CLIENT PAUSE lasts: short, so that
// Redis takes writes again soon after an agent that dies mid-failover.
const defaultPauseSlice = 300 * time.Millisecond

// pauseState is the pause as the Instance and the status API see it.
type pauseState struct {
	Active bool
	Since  time.Time
	Why    string
}

// pauser pauses the writes of one local Redis while Sentinel fails it over.
type pauser struct {
	masterName string
	id         string // the service ID, for metrics and the journal
	self       []string
	slice      time.Duration
	timeout    time.Duration
	client     *redis.Client
	truth      TruthSource
	failovers  FailoverSource
	names      *nameResolver
	log        hclog.Logger
	metrics    *telemetry.Metrics
	journal    *telemetry.Journal
	// changed wakes the Instance loop when the pause starts or ends, so
	// that the master tag goes at the moment the writes stop.
	changed chan struct{}

	// Owned by run.
	epoch   uint64
	lifted  uint64 // the failover whose pause was last lifted
	refused bool   // the Redis user may not pause: warned once
	// unsaved: CONFIG REWRITE after a REPLICAOF failed: warned once.
	unsaved bool

	mu    sync.Mutex
	state pauseState
}

// current returns the pause for the Instance and the status API.
func (p *pauser) current() pauseState {
	if p == nil {
		return pauseState{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// run follows the failovers until ctx is done. It renews a pause every
// third of a slice; a pause it holds when ctx ends lapses within a slice.
func (p *pauser) run(ctx context.Context) {
	defer p.client.Close()
	notify, unsubscribe := p.truth.Subscribe()
	defer unsubscribe()
	tick := time.NewTicker(p.slice / 3)
	defer tick.Stop()
	for {
		p.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-notify:
		case <-tick.C:
		}
	}
}

// step reads the failover, the truth and (only when a failover concerns
// this node) the local role, and applies pauseStep.
func (p *pauser) step(ctx context.Context) {
	fo, has := p.failovers.Failovers()[p.masterName]
	active := p.current().Active
	if !active && (!has || fo.Outcome != FailoverRunning) {
		return
	}
	truth := p.truth.Masters()[p.masterName]
	names := p.names.names(ctx, p.self, fo.Old, fo.Selected, truth.Addr)
	if !active && !names.IsSelf(fo.Old) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	local, err := readRole(rctx, p.client)
	cancel()
	if ctx.Err() != nil {
		return
	}
	st := p.current()
	act, why := pauseStep(pauseInput{
		Failover: fo, HasFailover: has, Truth: truth, Local: local, LocalErr: err, Names: names, Now: time.Now(),
		Paused: st.Active, PausedEpoch: p.epoch, PausedSince: st.Since, LiftedEpoch: p.lifted,
	})
	switch act {
	case pauseHold:
		p.hold(ctx, fo, why)
	case pauseLift:
		p.lift(ctx, why)
	case pauseDemote:
		p.hold(ctx, fo, "")
		p.demote(ctx, why)
	}
}

// demote makes the paused local Redis a replica of master, the address a
// +switch-master announced and the truth names. A Redis user without the
// right lifts the pause instead, with one warning, so that Sentinel can
// reconfigure the node itself (see pauseStep).
func (p *pauser) demote(ctx context.Context, master string) {
	host, port, err := addr.Split(master)
	if err != nil {
		p.lift(ctx, fmt.Sprintf("cannot make it a replica of %q: %v", master, err))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	err = p.client.Do(rctx, "replicaof", host, strconv.Itoa(port)).Err()
	cancel()
	switch {
	case err == nil:
		p.log.Info("made the paused old master a replica of the announced master", "master_name", p.masterName, "master", master)
		p.journal.Add(telemetry.Event{Kind: telemetry.KindRedis, Type: "replicaof", Subject: p.id,
			Detail: "REPLICAOF " + master + " after the switch was announced, while writes were paused"})
		p.persist(ctx)
	case strings.HasPrefix(err.Error(), "NOPERM"):
		p.log.Warn("cannot make the paused old master a replica: the Redis user may not run REPLICAOF; lifting the pause so that Sentinel can (grant +replicaof)",
			"master_name", p.masterName, "error", err)
		p.lift(ctx, "REPLICAOF refused ("+err.Error()+"): Sentinel reconfigures it")
	default:
		p.log.Warn("cannot make the paused old master a replica; retrying", "master_name", p.masterName, "master", master, "error", err)
	}
}

// persist saves the REPLICAOF in the node's config file (CONFIG REWRITE),
// as Sentinel does after it reconfigures a node: since the agent made it a
// replica, Sentinel finds nothing to reconfigure and would not, and a node
// that restarted from a config without the replicaof line would come back
// a master with old data. A failure costs the save, not the failover: one
// warning (the agent keeps such a node out of DNS; Sentinel converts it).
func (p *pauser) persist(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	err := p.client.Do(rctx, "config", "rewrite").Err()
	cancel()
	if err == nil {
		p.unsaved = false
		return
	}
	if !p.unsaved {
		p.unsaved = true
		p.log.Warn("made the old master a replica, but could not save that in its config file (CONFIG REWRITE; grant +config|rewrite): if it restarts before Sentinel rewrites it, it comes back a master, which the agent keeps out of DNS until Sentinel converts it",
			"master_name", p.masterName, "error", err)
	}
}

// hold sends CLIENT PAUSE <slice> WRITE: it starts a pause or renews it.
func (p *pauser) hold(ctx context.Context, fo FailoverView, why string) {
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	err := p.client.Do(rctx, "client", "pause", strconv.FormatInt(p.slice.Milliseconds(), 10), "write").Err()
	cancel()
	st := p.current()
	if err != nil {
		p.holdFailed(fo, st.Active, err)
		return
	}
	if st.Active {
		return
	}
	now := time.Now()
	p.epoch = fo.Epoch
	p.mu.Lock()
	p.state = pauseState{Active: true, Since: now, Why: why}
	p.mu.Unlock()
	p.metrics.WritePauseActive.WithLabelValues(p.id).Set(1)
	p.metrics.WritePauses.WithLabelValues(p.id).Inc()
	p.log.Info("writes paused: this master is being failed over", "master_name", p.masterName, "epoch", fo.Epoch,
		"phase", fo.Phase, "selected", orDash(fo.Selected), "slice", p.slice)
	p.journal.Add(telemetry.Event{Time: now, Kind: telemetry.KindRedis, Type: "write-pause", Subject: p.id,
		Detail: fmt.Sprintf("CLIENT PAUSE WRITE in %s slices: %s", p.slice, why)})
	p.wake()
}

// holdFailed reports a refused or failed CLIENT PAUSE: a Redis user
// without the right to pause once, loudly; anything else at each start.
func (p *pauser) holdFailed(fo FailoverView, active bool, err error) {
	switch {
	case strings.HasPrefix(err.Error(), "NOPERM"):
		if !p.refused {
			p.refused = true
			p.log.Warn("cannot pause writes during the failover: the Redis user may not run CLIENT PAUSE; failovers are still followed, but writes this master acknowledges until Sentinel reconfigures it may be lost (grant +client|pause +client|unpause)",
				"master_name", p.masterName, "error", err)
			p.journal.Add(telemetry.Event{Kind: telemetry.KindRedis, Type: "write-pause-refused", Subject: p.id, Level: telemetry.LevelWarn,
				Detail: "CLIENT PAUSE refused: " + err.Error()})
		}
	case active:
		p.log.Warn("cannot renew the write pause; it lapses within a slice", "master_name", p.masterName, "slice", p.slice, "error", err)
	default:
		p.log.Warn("cannot pause writes during the failover", "master_name", p.masterName, "epoch", fo.Epoch, "error", err)
	}
}

// lift sends CLIENT UNPAUSE. The pause counts as lifted even if the
// command fails: it lapses within a slice without renewals.
func (p *pauser) lift(ctx context.Context, why string) {
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	err := p.client.Do(rctx, "client", "unpause").Err()
	cancel()
	now := time.Now()
	p.lifted = p.epoch
	p.mu.Lock()
	since := p.state.Since
	p.state = pauseState{}
	p.mu.Unlock()
	p.metrics.WritePauseActive.WithLabelValues(p.id).Set(0)
	held := now.Sub(since).Round(time.Millisecond)
	detail := fmt.Sprintf("lifted after %s: %s", held, why)
	if err != nil {
		detail += fmt.Sprintf(" (CLIENT UNPAUSE failed: %v; the pause lapses within %s)", err, p.slice)
	}
	p.log.Info("write pause lifted", "master_name", p.masterName, "held", held, "why", why, "error", err)
	p.journal.Add(telemetry.Event{Time: now, Kind: telemetry.KindRedis, Type: "write-unpause", Subject: p.id, Detail: detail})
	p.wake()
}

func (p *pauser) wake() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}
