package haproxy

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/proxytruth"
)

// Truth is the Sentinel truth the driver follows: the current masters, and
// a notification whenever they change. The agent adapts the discovery
// Monitor to it, as it does for twemproxy, so HAProxy follows the same truth
// with the same split-brain rules as Consul.
type Truth = proxytruth.Source

// Master is one master name's truth. The driver never moves a server to a
// Stale one: an old master that returns still claiming master must get no
// traffic.
type Master = proxytruth.Master

// Server is one HAProxy server the driver keeps on a shard's master.
type Server struct {
	Backend, Server string
	MasterName      string
}

// Name is "backend/server", as the runtime API spells it.
func (s Server) Name() string { return s.Backend + "/" + s.Server }

// Step is what one server needs: the commands Apply sends, in this order.
type Step struct {
	Server Server
	// Move: set server addr To (from From), then shutdown sessions, so that
	// clients still connected to From reconnect.
	Move     bool
	From, To string
	Host     string // To's host, an IP address
	Port     int
	// Ready: set server state ready (it is in maintenance or drain).
	Ready bool
	// HealthUp: set server health up, since HAProxy's own check holds the
	// server down for the address it had before the move.
	HealthUp bool
	// Since is when the agent learnt To.
	Since time.Time
}

// Verdict is one managed server compared with the truth.
type Verdict struct {
	Server Server
	Addr   string // where HAProxy points it; empty when HAProxy lacks it
	Truth  string // the master's address; empty when the truth lacks it
	// Matches: HAProxy points it at the (fresh) truth and it is ready.
	Matches bool
	Ready   bool // no maintenance or drain
	Up      bool // HAProxy's own check holds it up
	Stale   bool // the truth is not confirmed now
	Missing bool // HAProxy has no such backend/server
	// Problem says in words why it does not match, empty when it does.
	Problem string
}

// Plan compares HAProxy's servers with the truth and returns the steps that
// put them right, and a verdict per managed server. The rules:
//   - a server HAProxy does not have is an error (Missing), never guessed;
//   - a master name the truth lacks, or holds only stale, changes nothing:
//     the server keeps its address, and its verdict says why;
//   - a master whose host is not an IP address changes nothing (the runtime
//     API sets addresses, not names);
//   - a server at another address than the master is moved, made ready if
//     it is not, and marked up if HAProxy checks it and holds it down;
//   - a server at the master's address that is in maintenance or drain is
//     made ready, unless that state is inherited (a tracked server, DNS),
//     which the runtime API cannot clear; one HAProxy's check holds down is
//     left to that check.
func Plan(servers []Server, masters map[string]Master, state []ServerState) ([]Step, []Verdict) {
	byName := make(map[string]ServerState, len(state))
	for _, s := range state {
		byName[s.Backend+"/"+s.Server] = s
	}
	var steps []Step
	verdicts := make([]Verdict, 0, len(servers))
	for _, srv := range servers {
		v := Verdict{Server: srv}
		st, ok := byName[srv.Name()]
		if !ok {
			v.Missing = true
			v.Problem = fmt.Sprintf("HAProxy has no server %s", srv.Name())
			verdicts = append(verdicts, v)
			continue
		}
		v.Addr, v.Ready, v.Up = addr.Normalize(st.Addr), st.Ready(), st.Up()
		m, known := masters[srv.MasterName]
		if known && m.Addr != "" {
			v.Truth = addr.Normalize(m.Addr)
		}
		switch {
		case v.Truth == "":
			v.Problem = fmt.Sprintf("%s: no Sentinel truth for %s yet; keeping %s", srv.Name(), srv.MasterName, v.Addr)
		case m.Stale:
			v.Stale = true
			v.Problem = fmt.Sprintf("%s: the Sentinels have not confirmed %s lately; keeping %s", srv.Name(), srv.MasterName, v.Addr)
		case !addr.Same(st.Addr, m.Addr):
			step, err := moveStep(srv, st, m)
			if err != nil {
				v.Problem = fmt.Sprintf("%s is %s but Sentinel says %s, which it cannot be set to: %v", srv.Name(), v.Addr, v.Truth, err)
				break
			}
			steps = append(steps, step)
			v.Problem = fmt.Sprintf("%s is %s but Sentinel says %s", srv.Name(), v.Addr, v.Truth)
		case !st.Ready() && !st.Settable():
			v.Problem = fmt.Sprintf("%s is at %s but in maintenance or drain that it inherits from a tracked server or DNS resolution (admin state %#x)", srv.Name(), v.Addr, st.Admin)
		case !st.Ready():
			steps = append(steps, Step{Server: srv, Ready: true, From: st.Addr, To: m.Addr, Since: m.Since})
			v.Problem = fmt.Sprintf("%s is at %s but in maintenance or drain (admin state %#x)", srv.Name(), v.Addr, st.Admin)
		default:
			v.Matches = true
		}
		verdicts = append(verdicts, v)
	}
	return steps, verdicts
}

func moveStep(srv Server, st ServerState, m Master) (Step, error) {
	host, port, err := addr.Split(m.Addr)
	if err != nil {
		return Step{}, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return Step{}, fmt.Errorf("host %q is not an IP address", host)
	}
	return Step{
		Server: srv, Move: true, From: st.Addr, To: addr.Normalize(m.Addr),
		Host: ip.Unmap().String(), Port: port,
		Ready: !st.Ready() && st.Settable(), HealthUp: st.Checked() && !st.Up(), Since: m.Since,
	}, nil
}

// String is the step in words, for logs and the journal.
func (s Step) String() string {
	switch {
	case s.Move:
		return fmt.Sprintf("%s %s -> %s", s.Server.Name(), s.From, s.To)
	case s.Ready:
		return fmt.Sprintf("%s ready at %s", s.Server.Name(), s.From)
	}
	return s.Server.Name()
}
