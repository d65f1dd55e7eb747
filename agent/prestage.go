package agent

import (
	"context"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

// The pre-staged rewrite (docs/ARCHITECTURE.md, "A failover's data path"):
// while the Monitor follows a failover whose leader has selected a replica,
// the twemproxy runner renders and validates the file that replica's
// promotion needs, so that at the promotion the pipeline only renames,
// restarts and probes.

// failoverSource is what the pre-staging follows: the Monitor's failovers
// and its wake-ups.
type failoverSource interface {
	Failovers() map[string]discovery.FailoverView
	Subscribe() (<-chan struct{}, func())
}

// stager is the twemproxy runner's side of the pre-staging.
type stager interface {
	Prestage(ctx context.Context, candidates []twemproxy.Candidate) (int, error)
}

// prestageCandidates are the replicas that running failovers have
// selected, sorted so that equal sets compare equal. A promoted replica
// stays a candidate until its failover ends: the promotion wakes the
// pipeline and this loop at once, and the pipeline must still find the
// file. The runner drops a staged file once a run acted; an ended failover
// has no candidate, so the next Prestage call removes whatever is left.
func prestageCandidates(views map[string]discovery.FailoverView) []twemproxy.Candidate {
	var out []twemproxy.Candidate
	for name, v := range views {
		if v.Outcome == discovery.FailoverRunning && v.Selected != "" {
			out = append(out, twemproxy.Candidate{Name: name, Addr: v.Selected})
		}
	}
	slices.SortFunc(out, func(a, b twemproxy.Candidate) int {
		return strings.Compare(a.Name+" "+a.Addr, b.Name+" "+b.Addr)
	})
	return out
}

// prestage keeps st's staged files on the candidates of src's running
// failovers until ctx ends. A watcher sends each new candidate set (the
// value itself, the newest replacing one not yet taken) and this loop
// stages it; an empty set after a staged one removes the files.
func prestage(ctx context.Context, src failoverSource, st stager, log hclog.Logger) {
	sets := make(chan []twemproxy.Candidate, 1)
	go watchCandidates(ctx, src, sets)
	staged := 0
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-sets:
			if len(c) == 0 && staged == 0 {
				continue
			}
			n, err := st.Prestage(ctx, c)
			staged = n
			if err != nil && ctx.Err() == nil {
				log.Warn("prestage: a candidate's config was not staged; its promotion will be validated on the way", "error", err)
			}
		}
	}
}

// watchCandidates sends src's candidate set on sets each time it changes.
// It is the only sender, so emptying the buffer before a send never blocks.
func watchCandidates(ctx context.Context, src failoverSource, sets chan []twemproxy.Candidate) {
	notify, unsubscribe := src.Subscribe()
	defer unsubscribe()
	var last []twemproxy.Candidate
	for first := true; ; first = false {
		if c := prestageCandidates(src.Failovers()); first || !slices.Equal(c, last) {
			select {
			case <-sets:
			default:
			}
			sets <- c
			last = c
		}
		select {
		case <-ctx.Done():
			return
		case <-notify:
		}
	}
}
