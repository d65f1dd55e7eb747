package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/agent/statusclient"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// Bounds of asking peers. However many dashboards are open and however
// long, an agent asks each peer at most once per peerMaxAge, waits at most
// peerTimeout, asks at most maxPeers of them, and keeps only their latest
// answers: the cost grows with the number of agents, never with time.
const (
	peerMaxAge  = 5 * time.Second
	peerTimeout = time.Second
	maxPeers    = 32
)

// peerCache holds the peers' latest reports. Its lock guards only the
// fields; a refresh runs outside it, one at a time (refreshing).
type peerCache struct {
	mu         sync.Mutex
	at         time.Time
	reports    []nodeReport
	peers      []status.Peer
	refreshing bool
}

// peerReports returns what the other agents know of recent failovers, and
// who they are, asking them again when the last answers are older than
// peerMaxAge. A refresh already running elsewhere is not waited for.
func (a *Agent) peerReports(ctx context.Context, selfID string) ([]nodeReport, []status.Peer) {
	c := &a.peerCache
	c.mu.Lock()
	if c.refreshing || (!c.at.IsZero() && time.Since(c.at) < peerMaxAge) {
		r, p := c.reports, c.peers
		c.mu.Unlock()
		return r, p
	}
	c.refreshing = true
	c.mu.Unlock()

	reports, peers := a.askPeers(ctx, selfID)

	c.mu.Lock()
	c.at, c.reports, c.peers, c.refreshing = time.Now(), reports, peers, false
	c.mu.Unlock()
	return reports, peers
}

// askPeers finds the agents through their redis-consul-agent services and
// reads each one's /v1/status in parallel.
func (a *Agent) askPeers(ctx context.Context, selfID string) ([]nodeReport, []status.Peer) {
	res, err := consulhealth.Service(ctx, a.consul, consulname.Agent, consulhealth.Query{AllowStale: true})
	var peers []status.Peer
	var fe *consulhealth.FilteredError
	switch {
	case errors.As(err, &fe):
		res = fe.Partial
		peers = append(peers, status.Peer{Node: "?", Error: fmt.Sprintf("the ACL token may not read every %s service: agents it hides are not asked", consulname.Agent)})
	case err != nil:
		return nil, []status.Peer{{Node: "?", Error: "cannot list the agents: " + err.Error()}}
	}
	sort.Slice(res.Instances, func(i, j int) bool { return res.Instances[i].ID < res.Instances[j].ID })

	type job struct {
		i    int
		addr string
	}
	var jobs []job
	for _, in := range res.Instances {
		if in.ID == selfID {
			continue
		}
		p := status.Peer{Node: in.Node, ServiceID: in.ID, Addr: peerAddr(in)}
		switch {
		case p.Addr == "":
			p.Error = "registers no status address (http.address unset)"
		case len(jobs) >= maxPeers:
			p.Error = fmt.Sprintf("not asked: more than %d agents", maxPeers)
		default:
			jobs = append(jobs, job{len(peers), p.Addr})
		}
		peers = append(peers, p)
	}

	reports := make([]nodeReport, len(jobs))
	var wg sync.WaitGroup
	for k, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, peerTimeout)
			defer cancel()
			cl := statusclient.NewClient(j.addr)
			cl.HTTP = &http.Client{Timeout: peerTimeout}
			snap, _, err := cl.Status(cctx)
			if err != nil {
				peers[j.i].Error = err.Error()
				return
			}
			// The agent that answered must be the one registered: a
			// status API on loopback is reached as some local agent.
			if id := heartbeatID(snap.Node, j.addr); id != peers[j.i].ServiceID {
				peers[j.i].Error = fmt.Sprintf("the agent answering at %s is %q (%s), not this one: is its http.address on loopback, out of reach from other hosts?", j.addr, snap.Node, id)
				return
			}
			peers[j.i].Node = snap.Node
			reports[k] = nodeReport{Node: snap.Node, Failovers: snap.Failovers, Events: snap.Events}
		}()
	}
	wg.Wait()
	out := reports[:0]
	for _, r := range reports {
		if r.Node != "" {
			out = append(out, r)
		}
	}
	return out, peers
}

// peerAddr is where a peer's status API answers: its Meta "http", with an
// unspecified host (0.0.0.0, ::) replaced by the address it registered.
func peerAddr(in consulhealth.Instance) string {
	a := in.Meta[consulname.MetaHTTP]
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		h, _, err := net.SplitHostPort(in.Address)
		if err != nil {
			return a
		}
		return net.JoinHostPort(h, port)
	}
	return a
}
