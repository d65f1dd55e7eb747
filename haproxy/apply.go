package haproxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// apply sends the commands of each step: set addr, state ready, health up,
// then shutdown sessions, so that a client still on the old master is cut
// only once new connections go to the new one. A failed step does not stop
// the others (another shard's server must still move); the errors are
// joined. A server moved whose sessions could not be shut down is kept in
// s.cut, and the next reconcile shuts them down first.
func (d *Driver) apply(ctx context.Context, s *loop, steps []Step) error {
	var errs []error
	for srv := range s.cut {
		if err := d.shutdown(ctx, srv); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.cut, srv)
	}
	for _, st := range steps {
		moved, err := d.applyStep(ctx, st)
		if err != nil {
			errs = append(errs, err)
		}
		if moved && err != nil {
			s.cut[st.Server] = true
		}
	}
	return errors.Join(errs...)
}

// applyStep sends one step's commands; moved says the address changed.
func (d *Driver) applyStep(ctx context.Context, st Step) (moved bool, err error) {
	b, s := st.Server.Backend, st.Server.Server
	if st.Move {
		err := d.client.SetAddr(ctx, b, s, st.Host, st.Port)
		d.noteCall("set server addr", err)
		if err != nil {
			return false, fmt.Errorf("move %s: %w", st, err)
		}
	}
	if st.Ready {
		err := d.client.SetReady(ctx, b, s)
		d.noteCall("set server state", err)
		if err != nil {
			return st.Move, fmt.Errorf("make %s ready: %w", st.Server.Name(), err)
		}
	}
	if st.HealthUp {
		err := d.client.HealthUp(ctx, b, s)
		d.noteCall("set server health", err)
		if err != nil {
			return st.Move, fmt.Errorf("mark %s up: %w", st.Server.Name(), err)
		}
	}
	if !st.Move {
		d.log.Info("server made ready", "server", st.Server.Name(), "addr", st.From)
		return false, nil
	}
	now := time.Now()
	var reaction time.Duration
	if !st.Since.IsZero() {
		reaction = now.Sub(st.Since)
		d.o.Metrics.Reaction.WithLabelValues(d.o.Name).Observe(reaction.Seconds())
	}
	d.o.Metrics.Moves.WithLabelValues(d.o.Name, b, s).Inc()
	d.log.Info("server moved to the master", "server", st.Server.Name(), "master_name", st.Server.MasterName,
		"from", st.From, "to", st.To, "reaction", reaction.Round(time.Microsecond))
	d.o.Journal.Add(telemetry.Event{Kind: telemetry.KindHAProxy, Type: "move", Subject: d.o.Name, Detail: st.String()})
	// The failover story: when this is the first HAProxy server of the
	// agent moved to a failover's new master, that is when HAProxy applied it.
	d.o.Journal.AppliedHAProxy(st.Server.MasterName, st.To, now)
	d.mu.Lock()
	d.status.Moves++
	d.status.LastMove = &MoveStatus{At: now, Server: st.Server.Name(), From: st.From, To: st.To, Reaction: reaction}
	d.mu.Unlock()
	return true, d.shutdown(ctx, st.Server)
}

// shutdown closes the sessions still open to a server's old address.
func (d *Driver) shutdown(ctx context.Context, srv Server) error {
	err := d.client.ShutdownSessions(ctx, srv.Backend, srv.Server)
	d.noteCall("shutdown sessions", err)
	if err != nil {
		return fmt.Errorf("shut down the sessions of %s: %w", srv.Name(), err)
	}
	return nil
}

// noteCall counts a runtime API command by its result.
func (d *Driver) noteCall(command string, err error) {
	result := "ok"
	switch {
	case errors.Is(err, ErrRefused):
		result = "refused"
	case err != nil:
		result = "error"
	}
	d.o.Metrics.Commands.WithLabelValues(d.o.Name, command, result).Inc()
}
