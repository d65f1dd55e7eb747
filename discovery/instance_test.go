package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
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
	lapse   bool // the next Lapsed call reports a lapse
}

func (f *fakeRegistry) Lapsed(string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.lapse
	f.lapse = false
	return l
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

// runInstance runs inst until the test ends.
func runInstance(t *testing.T, inst *Instance) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inst.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
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
	runInstance(t, inst)
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
	if svc.ID != consulname.ServiceID("redis", node.addr) || svc.Name != "redis" || fmt.Sprint(svc.Meta) != fmt.Sprint(wantMeta) {
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
	// The journal and the reaction metric are written just after the
	// registry update the wait above saw: wait for them too.
	reactions := func() uint64 {
		var m dto.Metric
		if err := metrics.Reaction.WithLabelValues("consul").(prometheus.Histogram).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	var fs []telemetry.Failover
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
		fs = journal.Failovers()
		if len(fs) == 1 && !fs[0].ConsulAt.IsZero() && reactions() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("failover not marked applied: %+v, reaction observed %d times", fs, reactions())
		}
	}
	if n := reactions(); n != 1 {
		t.Fatalf("reaction observed %d times", n)
	}
	t.Logf("truth change → registry update in %s", fs[0].ConsulAt.Sub(at))

	st := inst.Status()
	if st.Role != consulname.RoleMaster || st.Status != api.HealthPassing || st.LocalRole != consulname.RoleMaster || st.Version != "7.0.15" {
		t.Fatalf("status %+v", st)
	}
}

// TestInstanceHandoff checks the wait of a promoted node for the old
// master to leave Consul's answers: it blocks on the index it was given,
// ends as soon as no other node is answered, takes the tag at the bound
// with a journal entry, counts an ACL-filtered answer and a failed query as
// unknown (it waits the bound, never takes "no answer" for "no old
// master"), and refuses once the truth names another node.
func TestInstanceHandoff(t *testing.T) {
	const self, old = "10.0.0.2:6379", "10.0.0.1:6379"
	oldInst := consulhealth.Instance{ID: "redis-10.0.0.1-6379", Address: old, Status: api.HealthPassing}
	truth := &fakeTruth{}
	truth.set(Master{Name: "shard.a", Addr: self, Source: SourceSwitchMaster, Agree: 1, Reporting: 3, Total: 3})
	newInst := func(q PeerQuery, journal *telemetry.Journal, handoff time.Duration) *Instance {
		inst, err := NewInstance(InstanceOptions{
			Address: self, MasterName: "shard.a", MasterHandoff: handoff, Peers: q,
			Truth: truth, Registry: &fakeRegistry{}, Journal: journal, Metrics: telemetry.Discard(),
		})
		if err != nil {
			t.Fatal(err)
		}
		return inst
	}
	ctx := context.Background()
	// blocking is a query that sees no change until wait passes.
	blocking := func(ctx context.Context, q consulhealth.Query, res consulhealth.Result, err error) (consulhealth.Result, error) {
		if q.WaitIndex != 0 {
			select {
			case <-time.After(q.WaitTime):
			case <-ctx.Done():
			}
		}
		return res, err
	}

	var calls []consulhealth.Query
	left := 2
	inst := newInst(func(_ context.Context, service string, q consulhealth.Query) (consulhealth.Result, error) {
		if service != "redis" || q.WaitTime <= 0 || q.WaitTime > time.Minute {
			t.Errorf("query of %q with wait %s", service, q.WaitTime)
		}
		calls = append(calls, consulhealth.Query{Tag: q.Tag, WaitIndex: q.WaitIndex})
		res := consulhealth.Result{LastIndex: q.WaitIndex + 1,
			Instances: []consulhealth.Instance{{ID: "redis-10.0.0.2-6379", Address: self, Status: api.HealthPassing}}}
		if left > 0 {
			left--
			res.Instances = append(res.Instances, oldInst, consulhealth.Instance{ID: "redis-dead", Address: "10.0.0.9:6379", Status: api.HealthCritical})
		}
		return res, nil
	}, nil, time.Minute)
	if v, _ := inst.handoff(ctx); v != handoffTake {
		t.Fatalf("verdict %d, want take", v)
	}
	want := []consulhealth.Query{{Tag: "shard-a-master"}, {Tag: "shard-a-master", WaitIndex: 1}, {Tag: "shard-a-master", WaitIndex: 2}}
	if !slices.Equal(calls, want) {
		t.Fatalf("queries %+v, want %+v", calls, want)
	}

	for _, tc := range []struct {
		name    string
		res     consulhealth.Result
		err     error
		journal string
	}{
		{"old master still answered", consulhealth.Result{LastIndex: 5, Instances: []consulhealth.Instance{oldInst}}, nil, "10.0.0.1:6379"},
		{"ACL filtered", consulhealth.Result{LastIndex: 5}, &consulhealth.FilteredError{Service: "redis", Partial: consulhealth.Result{LastIndex: 5}}, "ACL token may not read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			journal := telemetry.NewJournal(10)
			inst := newInst(func(ctx context.Context, _ string, q consulhealth.Query) (consulhealth.Result, error) {
				return blocking(ctx, q, tc.res, tc.err)
			}, journal, 200*time.Millisecond)
			start := time.Now()
			if v, _ := inst.handoff(ctx); v != handoffTakeAnyway {
				t.Fatalf("verdict %d, want take anyway", v)
			}
			if took := time.Since(start); took < 200*time.Millisecond || took > 10*time.Second {
				t.Fatalf("took the tag after %s, want the 200ms handoff", took)
			}
			evs := journal.Events()
			if len(evs) != 1 || evs[0].Type != "handoff" || !strings.Contains(evs[0].Detail, tc.journal) {
				t.Fatalf("journal %+v, want one handoff event with %q", evs, tc.journal)
			}
		})
	}

	// The truth moves to the node Consul answers during the wait: refuse
	// at once, never take the tag anyway.
	moved := make(chan struct{})
	inst = newInst(func(ctx context.Context, _ string, q consulhealth.Query) (consulhealth.Result, error) {
		if q.WaitIndex != 0 {
			select {
			case <-moved:
			case <-ctx.Done():
			}
		}
		return consulhealth.Result{LastIndex: 5, Instances: []consulhealth.Instance{oldInst}}, nil
	}, nil, time.Minute)
	go func() {
		time.Sleep(50 * time.Millisecond)
		truth.set(Master{Name: "shard.a", Addr: old, Source: SourceMajority, Agree: 3, Reporting: 3, Total: 3})
		close(moved)
	}()
	if v, _ := inst.handoff(ctx); v != handoffRefuse {
		t.Fatalf("verdict %d after the truth moved to the answered node, want refuse", v)
	}
}

// TestInstanceWaitsForTheFirstTruth: the agent starts beside an old master
// that came back (ROLE master, no truth yet). Nothing is written until the
// first truth, which names another node: the first write is critical with
// no role tag, and the master tag is never handed over, not even after the
// handoff wait. Without a truth at all, the first write comes at TruthWait,
// without the master tag.
func TestInstanceWaitsForTheFirstTruth(t *testing.T) {
	node := newFakeNode(t)
	node.setRole("master", int64(7), []any{})
	node.setInfo("# Server", "redis_version:7.0.15", "loading:0")
	other := "10.9.9.9:6379"
	peers := func(context.Context, string, consulhealth.Query) (consulhealth.Result, error) {
		return consulhealth.Result{LastIndex: 1, Instances: []consulhealth.Instance{{ID: "redis-10.9.9.9-6379", Address: other, Status: api.HealthPassing}}}, nil
	}
	run := func(t *testing.T, truth *fakeTruth, wait time.Duration) (*fakeRegistry, func()) {
		reg := &fakeRegistry{}
		inst, err := NewInstance(InstanceOptions{
			Address: node.addr, MasterName: "shard_a", Tick: 20 * time.Millisecond, Timeout: 200 * time.Millisecond,
			TruthWait: wait, MasterHandoff: 100 * time.Millisecond, Peers: peers,
			Truth: truth, Registry: reg, Metrics: telemetry.Discard(),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- inst.Run(ctx) }()
		return reg, func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	updates := func(reg *fakeRegistry) []string {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		return slices.Clone(reg.updates)
	}
	waitUpdates := func(t *testing.T, reg *fakeRegistry, n int) []string {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(updates(reg)) < n {
			if time.Now().After(deadline) {
				t.Fatalf("updates %q, want %d", updates(reg), n)
			}
			time.Sleep(time.Millisecond)
		}
		return updates(reg)
	}

	t.Run("truth arrives", func(t *testing.T) {
		truth := &fakeTruth{}
		reg, stop := run(t, truth, time.Minute)
		defer stop()
		time.Sleep(200 * time.Millisecond) // ten ticks: nothing may be written before the truth
		if u := updates(reg); len(u) != 0 {
			t.Fatalf("wrote %q before the first truth", u)
		}
		truth.set(Master{Name: "shard_a", Addr: other, Source: SourceMajority, Agree: 3, Reporting: 3, Total: 3})
		u := waitUpdates(t, reg, 1)
		if u[0] != "[] critical" {
			t.Fatalf("first write %q, want no role tag, critical", u)
		}
		time.Sleep(200 * time.Millisecond)
		for _, s := range updates(reg) {
			if strings.Contains(s, "master") {
				t.Fatalf("the old master got the master tag: %q", updates(reg))
			}
		}
	})
	t.Run("no truth at all", func(t *testing.T) {
		// Before Run starts, so that the TruthWait timer starts after it.
		start := time.Now()
		reg, stop := run(t, &fakeTruth{}, 150*time.Millisecond)
		defer stop()
		u := waitUpdates(t, reg, 1)
		if took := time.Since(start); took < 100*time.Millisecond {
			t.Fatalf("first write after %s, before TruthWait", took)
		}
		if u[0] != "[] warning" {
			t.Fatalf("first write %q, want no role tag, warning", u)
		}
	})
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

// TestInstanceHandoffWithoutConsul: Sentinel names this node master while
// Consul cannot be asked (no cluster leader). However long that lasts, and
// past the handoff limit, the node registers without the master tag, saying
// why; once Consul answers with no other master it takes the tag at once.
func TestInstanceHandoffWithoutConsul(t *testing.T) {
	node := newFakeNode(t)
	node.setRole("master", int64(7), []any{})
	node.setInfo("# Server", "redis_version:7.0.15", "loading:0")
	truth := &fakeTruth{}
	truth.set(Master{Name: "shard_a", Addr: node.addr, Source: SourcePromotion, Agree: 1, Reporting: 3, Total: 3})
	var down atomic.Bool
	down.Store(true)
	var asked atomic.Int64
	peers := func(context.Context, string, consulhealth.Query) (consulhealth.Result, error) {
		asked.Add(1)
		if down.Load() {
			return consulhealth.Result{}, errors.New("Unexpected response code: 500 (No cluster leader)")
		}
		return consulhealth.Result{LastIndex: 9}, nil
	}
	reg := &fakeRegistry{}
	journal := telemetry.NewJournal(10)
	inst, err := NewInstance(InstanceOptions{
		Address: node.addr, MasterName: "shard_a", Tick: time.Hour, Timeout: 200 * time.Millisecond,
		MasterHandoff: 100 * time.Millisecond, HandoffLimit: 300 * time.Millisecond, Peers: peers,
		Truth: truth, Registry: reg, Metrics: telemetry.Discard(), Journal: journal,
	})
	if err != nil {
		t.Fatal(err)
	}
	runInstance(t, inst)
	// Three times the limit, with no tick: the handoff retries on its own.
	deadline := time.Now().Add(900 * time.Millisecond)
	for time.Now().Before(deadline) {
		svc, h := reg.state()
		if slices.Contains(svc.Tags, "master") {
			t.Fatalf("took the master tag while consul could not be asked: %v %s %q", svc.Tags, h.Status, h.Output)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The registration follows the first handoff's end and the queries
	// follow timers: on a loaded machine both may lag the window, so wait
	// for them, still never with the master tag.
	deadline = time.Now().Add(5 * time.Second)
	for {
		svc, h := reg.state()
		if slices.Contains(svc.Tags, "master") {
			t.Fatalf("took the master tag while consul could not be asked: %v %s %q", svc.Tags, h.Status, h.Output)
		}
		registered := h.Status == api.HealthWarning && strings.Contains(h.Output, "No cluster leader") && strings.Contains(h.Output, "not taking the master tag")
		if registered && asked.Load() >= 10 {
			break
		}
		if time.Now().After(deadline) {
			if !registered {
				t.Fatalf("registered %v %s %q, want no master tag, warning, with consul's error", svc.Tags, h.Status, h.Output)
			}
			t.Fatalf("consul asked %d times in 6s, want the handoff to go on retrying", asked.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if evs := journal.Events(); len(evs) != 1 || !strings.Contains(evs[0].Detail, "did not take") {
		t.Fatalf("journal %+v, want one handoff event for the whole outage", evs)
	}
	down.Store(false)
	back := time.Now()
	for {
		svc, h := reg.state()
		if slices.Contains(svc.Tags, "master") && h.Status == api.HealthPassing {
			t.Logf("master tag taken %s after consul answered", time.Since(back).Round(time.Millisecond))
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("consul answers no other master, but the node registered %v %s %q", svc.Tags, h.Status, h.Output)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
