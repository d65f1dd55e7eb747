package agent

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/seed42ef8afe/redis-consul-agent/twemproxy"
)

type fakeFailovers struct {
	mu    sync.Mutex
	views map[string]discovery.FailoverView
	ch    chan struct{}
}

func (f *fakeFailovers) Failovers() map[string]discovery.FailoverView {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]discovery.FailoverView{}
	for k, v := range f.views {
		out[k] = v
	}
	return out
}

func (f *fakeFailovers) Subscribe() (<-chan struct{}, func()) { return f.ch, func() {} }

func (f *fakeFailovers) set(name string, v discovery.FailoverView) {
	f.mu.Lock()
	f.views[name] = v
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

type fakeStager struct{ calls chan []twemproxy.Candidate }

func (s *fakeStager) Prestage(_ context.Context, c []twemproxy.Candidate) (int, error) {
	s.calls <- c
	return len(c), nil
}

// TestPrestageFollowsFailovers: a selected replica is staged and stays
// staged through its promotion; the failover's end unstages it, an unchanged set is not
// staged twice and nothing is staged while no failover runs.
func TestPrestageFollowsFailovers(t *testing.T) {
	src := &fakeFailovers{views: map[string]discovery.FailoverView{}, ch: make(chan struct{}, 1)}
	st := &fakeStager{calls: make(chan []twemproxy.Candidate, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go prestage(ctx, src, st, hclog.NewNullLogger())
	want := func(what string, c ...twemproxy.Candidate) {
		t.Helper()
		select {
		case got := <-st.calls:
			if !slices.Equal(got, c) {
				t.Fatalf("%s: Prestage(%v), want %v", what, got, c)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no Prestage call", what)
		}
	}
	src.set("a", discovery.FailoverView{Epoch: 1, Old: "10.0.0.1:6379", Phase: "+elected-leader"})
	src.set("a", discovery.FailoverView{Epoch: 1, Old: "10.0.0.1:6379", Selected: "10.0.0.2:6379", Phase: "+selected-slave"})
	want("selected", twemproxy.Candidate{Name: "a", Addr: "10.0.0.2:6379"})
	src.set("a", discovery.FailoverView{Epoch: 1, Old: "10.0.0.1:6379", Selected: "10.0.0.2:6379", Phase: "+failover-state-send-slaveof-noone"})
	src.set("a", discovery.FailoverView{Epoch: 1, Old: "10.0.0.1:6379", Selected: "10.0.0.2:6379", Promoted: true})
	src.set("a", discovery.FailoverView{Epoch: 1, Selected: "10.0.0.2:6379", Outcome: discovery.FailoverAnnounced})
	want("announced")
	src.set("b", discovery.FailoverView{Epoch: 2, Selected: "10.0.0.5:6379"})
	want("another", twemproxy.Candidate{Name: "b", Addr: "10.0.0.5:6379"})
	src.set("b", discovery.FailoverView{Epoch: 2, Selected: "10.0.0.5:6379", Outcome: discovery.FailoverAborted})
	want("aborted")
	select {
	case got := <-st.calls:
		t.Fatalf("an extra Prestage(%v)", got)
	case <-time.After(100 * time.Millisecond):
	}
}
