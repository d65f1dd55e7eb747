package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// fakeTruth is a TruthSource the test sets by hand.
type fakeTruth struct {
	mu      sync.Mutex
	masters map[string]Master
	subs    []chan struct{}
}

func (f *fakeTruth) Masters() map[string]Master {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Master, len(f.masters))
	for k, v := range f.masters {
		out[k] = v
	}
	return out
}

func (f *fakeTruth) Subscribe() (<-chan struct{}, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{}, 1)
	f.subs = append(f.subs, ch)
	return ch, func() {}
}

func (f *fakeTruth) set(m Master) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.masters = map[string]Master{m.Name: m}
	for _, ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// fakeRegistry records what the runner hands over.
type fakeRegistry struct {
	mu      sync.Mutex
	updates []string // "<tags> <status>"
	last    Service
	lastH   Health
}

func (f *fakeRegistry) Update(_ context.Context, svc Service, h Health) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := fmt.Sprintf("%v %s", svc.Tags, h.Status)
	if len(f.updates) == 0 || f.updates[len(f.updates)-1] != s {
		f.updates = append(f.updates, s)
	}
	f.last, f.lastH = svc, h
	return nil
}

func (f *fakeRegistry) state() (Service, Health) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last, f.lastH
}

func TestInstanceFollowsTheTruth(t *testing.T) {
	node := newFakeNode(t)
	node.setRole("master", int64(7), []any{})
	node.setInfo("# Server", "redis_version:7.0.15", "loading:0")
	other := "10.9.9.9:6379"
	truth := &fakeTruth{}
	truth.set(Master{Name: "shard_a", Addr: node.addr, Source: SourceMajority, Agree: 3, Reporting: 3, Total: 3})
	reg := &fakeRegistry{}
	journal, metrics := telemetry.NewJournal(50), telemetry.Discard()
	inst, err := NewInstance(InstanceOptions{
		Address: node.addr, MasterName: "shard_a", Tick: time.Hour, Timeout: 200 * time.Millisecond,
		Truth: truth, Registry: reg, Journal: journal, Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inst.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	wait := func(what string, cond func(Service, Health) bool) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			svc, h := reg.state()
			if cond(svc, h) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: last update %+v %+v", what, svc, h)
			}
			time.Sleep(time.Millisecond)
		}
	}

	wait("master", func(s Service, h Health) bool {
		return slices.Equal(s.Tags, []string{"master", "shard-a-master"}) && h.Status == api.HealthPassing
	})
	svc, _ := reg.state()
	wantMeta := map[string]string{"role": "master", "master_name": "shard_a", "redis_version": "7.0.15"}
	if svc.ID != ServiceID("redis", node.addr) || svc.Name != "redis" || fmt.Sprint(svc.Meta) != fmt.Sprint(wantMeta) {
		t.Fatalf("service %+v", svc)
	}

	// The truth moves away while Redis hangs: the master tag goes at once,
	// before Redis is read again (withdraw), and once Redis answers the
	// full decision follows (the tick is an hour: only the notification
	// can explain a prompt re-evaluation).
	node.setHang(true)
	truth.set(Master{Name: "shard_a", Addr: other, Source: SourceSwitchMaster, Agree: 1, Reporting: 3, Total: 3})
	wait("master tag withdrawn before reading Redis", func(s Service, h Health) bool {
		return len(s.Tags) == 0 && h.Status == api.HealthCritical && strings.Contains(h.Output, "master tag withdrawn")
	})
	node.setHang(false)
	wait("disowned master", func(s Service, h Health) bool {
		return len(s.Tags) == 0 && h.Status == api.HealthCritical && !strings.Contains(h.Output, "withdrawn")
	})

	// It comes back to this node after a failover the Monitor journaled:
	// the runner records when Consul got it.
	at := time.Now()
	journal.Failover("shard_a", other, node.addr, at)
	truth.set(Master{Name: "shard_a", Addr: node.addr, Source: SourceSwitchMaster, Agree: 1, Reporting: 3, Total: 3})
	wait("master again", func(s Service, h Health) bool {
		return slices.Contains(s.Tags, "master") && h.Status == api.HealthPassing
	})
	fs := journal.Failovers()
	if len(fs) != 1 || fs[0].ConsulAt.IsZero() {
		t.Fatalf("failover not marked applied: %+v", fs)
	}
	var m dto.Metric
	if err := metrics.Reaction.WithLabelValues("consul").(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.GetHistogram().GetSampleCount() != 1 {
		t.Fatalf("reaction observed %d times", m.GetHistogram().GetSampleCount())
	}
	t.Logf("truth change → registry update in %s", fs[0].ConsulAt.Sub(at))

	st := inst.Status()
	if st.Role != RoleMaster || st.Status != api.HealthPassing || st.LocalRole != RoleMaster || st.Version != "7.0.15" {
		t.Fatalf("status %+v", st)
	}
}

// TestInstanceHandoff checks the wait of a promoted node for the old
// master to leave Consul's answers: it blocks on the index it was given,
// ends as soon as no other node is answered, gives up after MasterHandoff
// with a journal entry, and never holds a promotion back on a failed query.
func TestInstanceHandoff(t *testing.T) {
	type call struct {
		tag, self string
		index     uint64
	}
	newInst := func(q PeerQuery, journal *telemetry.Journal, handoff time.Duration) *Instance {
		inst, err := NewInstance(InstanceOptions{
			Address: "10.0.0.2:6379", MasterName: "shard.a", MasterHandoff: handoff, Peers: q,
			Truth: &fakeTruth{}, Registry: &fakeRegistry{}, Journal: journal,
		})
		if err != nil {
			t.Fatal(err)
		}
		return inst
	}
	ctx := context.Background()
	old := "redis-10.0.0.1-6379 (10.0.0.1:6379)"

	var calls []call
	left := 2
	inst := newInst(func(_ context.Context, service, tag, self string, index uint64, wait time.Duration) ([]string, uint64, error) {
		calls = append(calls, call{tag, self, index})
		if service != "redis" || wait <= 0 || wait > time.Minute {
			t.Errorf("query of %q with wait %s", service, wait)
		}
		if left == 0 {
			return nil, index + 1, nil
		}
		left--
		return []string{old}, index + 1, nil
	}, nil, time.Minute)
	inst.handoff(ctx)
	self := "redis-10.0.0.2-6379"
	want := []call{{"shard-a-master", self, 0}, {"shard-a-master", self, 1}, {"shard-a-master", self, 2}}
	if !slices.Equal(calls, want) {
		t.Fatalf("queries %+v, want %+v", calls, want)
	}

	journal := telemetry.NewJournal(10)
	inst = newInst(func(ctx context.Context, _, _, _ string, index uint64, wait time.Duration) ([]string, uint64, error) {
		select { // a blocking query that sees no change
		case <-time.After(wait):
		case <-ctx.Done():
		}
		return []string{old}, index, nil
	}, journal, 200*time.Millisecond)
	start := time.Now()
	inst.handoff(ctx)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("gave up after %s, before the 200ms handoff", took)
	}
	evs := journal.Events()
	if len(evs) != 1 || evs[0].Type != "handoff" || !strings.Contains(evs[0].Detail, "10.0.0.1:6379") {
		t.Fatalf("journal %+v, want one handoff event naming the old master", evs)
	}

	inst = newInst(func(context.Context, string, string, string, uint64, time.Duration) ([]string, uint64, error) {
		return nil, 0, errors.New("connection refused")
	}, nil, time.Hour)
	done := make(chan struct{})
	go func() { inst.handoff(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a failed query held the promotion back")
	}
}

func TestInfoField(t *testing.T) {
	info := "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nmaster_link_down_since_seconds:-1\r\nloading:0\r\n"
	for _, tc := range []struct{ key, want string }{
		{"role", "slave"},
		{"master_link_status", "up"},
		{"master_link_down_since_seconds", "-1"},
		{"loading", "0"},
		{"load", ""},
		{"# Replication", ""},
		{"absent", ""},
	} {
		if got := infoField(info, tc.key); got != tc.want {
			t.Errorf("infoField(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
	if got := infoField("", "role"); got != "" {
		t.Errorf("empty info: %q", got)
	}
}
