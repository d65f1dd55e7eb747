package discovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// PeerQuery reads the registrations of service (a blocking query when
// q.WaitIndex is set). A result the ACL token filtered must come back as a
// *consulhealth.FilteredError, as consulhealth.Service returns it.
type PeerQuery func(ctx context.Context, service string, q consulhealth.Query) (consulhealth.Result, error)

// ConsulPeers is the PeerQuery of a Consul client.
func ConsulPeers(c *api.Client) PeerQuery {
	return func(ctx context.Context, service string, q consulhealth.Query) (consulhealth.Result, error) {
		return consulhealth.Service(ctx, c, service, q)
	}
}

// handoffRetryPause spaces the queries of a handoff whose answer was
// unknown (failed, or filtered by the ACL token).
const handoffRetryPause = 50 * time.Millisecond

// handoff waits, up to MasterHandoff, until Consul answers no other node for
// this master name's master tag, and returns what handoffStep ruled and
// why: take (at once or anyway at the bound), refuse (the truth moved on)
// or unknown (Consul could not be asked). The limit of a wait on a live old
// master counts from this call: after an unknown one, from when Consul was
// asked again, since a check cannot expire in a catalog that has no leader.
func (i *Instance) handoff(ctx context.Context) (handoffVerdict, string) {
	start := time.Now()
	deadline := start.Add(i.opts.MasterHandoff)
	limit := start.Add(max(i.opts.MasterHandoff, i.opts.HandoffLimit))
	waitingOnAlive := false
	tag := consulname.ShardTag(i.opts.MasterName, consulname.RoleMaster)
	var index uint64
	warned := false
	for {
		// A blocking query without a wait time would block for minutes.
		until := deadline
		if waitingOnAlive {
			until = limit
		}
		wait := max(time.Until(until), time.Millisecond)
		qctx, cancel := context.WithDeadline(ctx, until.Add(i.opts.Timeout))
		view, next := i.peers(qctx, tag, index, wait)
		cancel()
		if ctx.Err() != nil {
			return handoffRefuse, "stopping"
		}
		truth := i.truth()
		addrs := []string{truth.Addr}
		for _, p := range view.Others {
			addrs = append(addrs, p.Addr)
		}
		expired := time.Until(deadline) < time.Millisecond
		if expired {
			view.Alive = i.alive(ctx, view.Others)
		}
		verdict, why := handoffStep(truth, view, expired, time.Until(limit) < time.Millisecond, i.names.names(ctx, i.self, addrs...))
		if verdict != handoffWait {
			i.handoffEnded(verdict, why, tag, time.Since(start).Round(time.Microsecond), index != 0 || warned)
			return verdict, why
		}
		if expired && why != "" && !waitingOnAlive {
			waitingOnAlive = true
			i.log.Warn("master handoff: "+why, "limit", max(i.opts.MasterHandoff, i.opts.HandoffLimit))
		}
		if view.Hidden && !warned {
			warned = true
			i.log.Warn("master handoff: consul hides registrations with the master tag from the agent's ACL token, so it cannot tell whether the old master left; waiting until none is hidden or master_handoff ends (give the token service:read on the service and node:read)",
				"service", i.opts.Service, "tag", tag, "master_handoff", i.opts.MasterHandoff)
		}
		if view.Err != nil || view.Hidden {
			// Ask again shortly, without blocking: whether Consul wakes a
			// blocking query for a change the token may not see is not
			// something to rely on.
			next = 0
			select {
			case <-ctx.Done():
				return handoffRefuse, "stopping"
			case <-time.After(min(handoffRetryPause, max(time.Until(deadline), 0))):
			}
		}
		if waitingOnAlive && next == index {
			// Consul's answer did not change within the wait: ask the
			// nodes again shortly rather than block the whole limit.
			select {
			case <-ctx.Done():
				return handoffRefuse, "stopping"
			case <-time.After(handoffRetryPause):
			}
		}
		if next < index { // the index went backwards (a new leader, a snapshot): start over
			next = 0
		}
		index = next
	}
}

// handoffEnded logs and journals how a handoff ended; waitedOn says it
// saw the old master in Consul (or could not see everything) first.
func (i *Instance) handoffEnded(verdict handoffVerdict, why, tag string, waited time.Duration, waitedOn bool) {
	blind := i.handoffBlind
	i.handoffBlind = verdict == handoffUnknown
	switch verdict {
	case handoffTake:
		if waitedOn || blind {
			i.log.Info("master handoff: the old master left consul's answers", "waited", waited)
		}
	case handoffRefuse:
		i.log.Info("master handoff: not taking the master tag", "why", why, "waited", waited)
	case handoffTakeAnyway:
		i.log.Warn("master handoff: taking the master tag at the end of the wait", "why", why, "waited", waited)
		i.opts.Journal.Add(telemetry.Event{Kind: telemetry.KindConsul, Type: "handoff", Subject: i.id, Level: "warn",
			Detail: fmt.Sprintf("took %s after %s: %s", tag, waited, why)})
	case handoffUnknown:
		if !blind { // once for the whole outage
			i.log.Warn("master handoff: "+why, "waited", waited)
			i.opts.Journal.Add(telemetry.Event{Kind: telemetry.KindConsul, Type: "handoff", Subject: i.id, Level: "warn",
				Detail: fmt.Sprintf("did not take %s: %s", tag, why)})
		}
	}
}

// peers asks Consul which other registrations it answers for tag, and
// returns what it saw and the index to block on next.
func (i *Instance) peers(ctx context.Context, tag string, index uint64, wait time.Duration) (PeerView, uint64) {
	res, err := i.opts.Peers(ctx, i.opts.Service, consulhealth.Query{Tag: tag, WaitIndex: index, WaitTime: wait})
	var view PeerView
	var filtered *consulhealth.FilteredError
	switch {
	case errors.As(err, &filtered):
		view.Hidden, res = true, filtered.Partial
	case err != nil:
		view.Err = err
		return view, index
	}
	for _, in := range res.Instances {
		if in.ID == i.id || in.Status == api.HealthCritical || in.Status == api.HealthMaint {
			continue // DNS does not answer it
		}
		view.Others = append(view.Others, Peer{ID: in.ID, Addr: in.Address})
	}
	return view, res.LastIndex
}

// alive returns the peers that answer Redis at all (a reply, even an
// error such as NOAUTH, means a live process that may take writes), each
// asked once with the instance's timeout and credentials.
func (i *Instance) alive(ctx context.Context, peers []Peer) []Peer {
	var out []Peer
	for _, p := range peers {
		if p.Addr == "" {
			continue
		}
		c := redis.NewClient(failFast(p.Addr, i.opts.Username, i.opts.Password, i.opts.TLSConfig, i.opts.Timeout, 1))
		err := c.Ping(ctx).Err()
		c.Close()
		var rerr redis.Error
		if err == nil || errors.As(err, &rerr) {
			out = append(out, p)
		}
	}
	return out
}
