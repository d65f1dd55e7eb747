package discovery

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// fakeConsul is the part of the Consul agent HTTP API the Registrar uses,
// with the behaviour that matters: a re-registered service keeps its
// existing check's status and output; an update of a check's output alone
// (same status) stays in the agent (Consul's check_update_interval), while
// a status change or a registration sends the check's output to the
// servers, whose view check() returns.
type fakeConsul struct {
	t     *testing.T
	token string // required token, "" for none

	mu       sync.Mutex
	services map[string]*api.AgentService
	checks   map[string]*api.AgentCheck
	refuse   []string                 // service names whose registration is forbidden
	ttl      map[string]time.Duration // TTL by check ID
	alias    map[string]string        // aliased service by check ID
	served   map[string]string        // check output the servers show, by check ID
	writes   []string                 // "register <id>", "ttl <id> <status>", "deregister <id>"
	history  []string                 // "<tags> <status>" of a service after every write
	failNext int                      // fail that many writes with 500

	// stall, when set, holds every TTL update of that check until the
	// request is cancelled or stallRelease closes; stalled receives once
	// per held request.
	stall        atomic.Pointer[string]
	stalled      chan string
	stallRelease chan struct{}
}

func newFakeConsul(t *testing.T) (*fakeConsul, *httptest.Server) {
	f := &fakeConsul{t: t, services: map[string]*api.AgentService{}, checks: map[string]*api.AgentCheck{},
		ttl: map[string]time.Duration{}, alias: map[string]string{}, served: map[string]string{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id := f.stall.Load(); id != nil && r.URL.Path == "/v1/agent/check/update/"+*id {
		f.stalled <- *id
		select {
		case <-r.Context().Done():
			return
		case <-f.stallRelease:
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != "" && r.Header.Get("X-Consul-Token") != f.token {
		http.Error(w, "Permission denied: token lacks permission 'service:write' on \"redis\"", http.StatusForbidden)
		return
	}
	if r.Method == http.MethodPut && f.failNext > 0 {
		f.failNext--
		http.Error(w, "rpc error: no leader", http.StatusInternalServerError)
		return
	}
	path := r.URL.Path
	switch {
	case r.Method == http.MethodPut && path == "/v1/agent/service/register":
		var reg api.AgentServiceRegistration
		if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if slices.Contains(f.refuse, reg.Name) {
			http.Error(w, "Permission denied: token lacks permission 'service:write' on \""+reg.Name+"\"", http.StatusForbidden)
			return
		}
		f.services[reg.ID] = &api.AgentService{ID: reg.ID, Service: reg.Name, Tags: reg.Tags, Meta: reg.Meta, Address: reg.Address, Port: reg.Port}
		checks := reg.Checks
		if reg.Check != nil {
			checks = append(checks, reg.Check)
		}
		if r.URL.Query().Get("replace-existing-checks") == "true" {
			for id, old := range f.checks {
				if old.ServiceID == reg.ID && !slices.ContainsFunc(checks, func(c *api.AgentServiceCheck) bool { return c.CheckID == id }) {
					delete(f.checks, id)
				}
			}
		}
		for _, c := range checks {
			// Like Consul: an existing check keeps its status and output.
			if _, ok := f.checks[c.CheckID]; !ok {
				f.checks[c.CheckID] = &api.AgentCheck{CheckID: c.CheckID, ServiceID: reg.ID, Status: c.Status}
			}
			ch := f.checks[c.CheckID]
			ch.Type, f.ttl[c.CheckID], f.alias[c.CheckID] = "ttl", 0, c.AliasService
			if c.AliasService != "" {
				ch.Type = "alias"
			} else if d, err := time.ParseDuration(c.TTL); err == nil {
				f.ttl[c.CheckID] = d
			}
		}
		for id, c := range f.checks {
			if c.ServiceID == reg.ID {
				f.served[id] = c.Output
			}
		}
		f.writes = append(f.writes, "register "+reg.ID)
		f.record(reg.ID)
	case r.Method == http.MethodPut && strings.HasPrefix(path, "/v1/agent/check/update/"):
		id := strings.TrimPrefix(path, "/v1/agent/check/update/")
		c, ok := f.checks[id]
		if !ok {
			http.Error(w, "Unknown check ID \""+id+"\"", http.StatusNotFound)
			return
		}
		var u struct{ Status, Output string }
		if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if c.Status != u.Status {
			f.served[id] = u.Output
		}
		c.Status, c.Output = u.Status, u.Output
		f.writes = append(f.writes, "ttl "+c.ServiceID+" "+u.Status)
		f.record(c.ServiceID)
	case r.Method == http.MethodPut && strings.HasPrefix(path, "/v1/agent/service/deregister/"):
		id := strings.TrimPrefix(path, "/v1/agent/service/deregister/")
		if _, ok := f.services[id]; !ok {
			http.Error(w, "Unknown service ID", http.StatusNotFound)
			return
		}
		delete(f.services, id)
		for cid, c := range f.checks {
			if c.ServiceID == id {
				delete(f.checks, cid)
			}
		}
		f.writes = append(f.writes, "deregister "+id)
	case r.Method == http.MethodGet && path == "/v1/agent/services":
		_ = json.NewEncoder(w).Encode(f.services)
	default:
		http.Error(w, "unexpected "+r.Method+" "+path, http.StatusTeapot)
		f.t.Errorf("fake consul: unexpected %s %s", r.Method, path)
	}
}

// record appends the state of service id: its tags and the status of its
// checks (the worst counts, as in Consul's aggregated status).
func (f *fakeConsul) record(id string) {
	s := f.services[id]
	if s == nil {
		return
	}
	f.history = append(f.history, strings.Join(s.Tags, ",")+" "+f.statusLocked(id).Status)
}

// statusLocked returns the check of service id; with several, the worst.
func (f *fakeConsul) statusLocked(id string) api.AgentCheck {
	rank := map[string]int{api.HealthPassing: 1, api.HealthWarning: 2, api.HealthCritical: 3}
	var worst api.AgentCheck
	n := 0
	for _, c := range f.checks {
		if c.ServiceID != id {
			continue
		}
		cc := *c
		cc.Output = f.served[c.CheckID]
		if c.Type == "alias" {
			// Like Consul: an alias takes the worst status of the service
			// it aliases, critical when that service is gone.
			cc.Status = api.HealthCritical
			if _, ok := f.services[f.alias[c.CheckID]]; ok {
				cc.Status = f.statusLocked(f.alias[c.CheckID]).Status
			}
		} else {
			n++
		}
		if rank[cc.Status] > rank[worst.Status] {
			worst = cc
		}
	}
	if n > 1 {
		f.t.Errorf("fake consul: service %s has %d status checks", id, n)
	}
	return worst
}

// fakeCheck is a check as registered: its type, TTL and aliased service.
type fakeCheck struct {
	ttl   time.Duration
	alias string
}

// checksOf returns the checks of service id by type.
func (f *fakeConsul) checksOf(id string) map[string]fakeCheck {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]fakeCheck{}
	for cid, c := range f.checks {
		if c.ServiceID == id {
			out[c.Type] = fakeCheck{f.ttl[cid], f.alias[cid]}
		}
	}
	return out
}

// take returns and clears the writes and history so far.
func (f *fakeConsul) take() (writes, history []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writes, history = f.writes, f.history
	f.writes, f.history = nil, nil
	return writes, history
}

func (f *fakeConsul) check(id string) api.AgentCheck {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statusLocked(id)
}

func newTestRegistrar(t *testing.T, addr, token string) *Registrar {
	t.Helper()
	c, err := NewConsulClient(ConsulOptions{Address: addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRegistrar(RegistrarOptions{
		Client: c, TTL: 3 * time.Second, ResyncInterval: 50 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Metrics: telemetry.Discard(), Journal: telemetry.NewJournal(100),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testService(tags ...string) Service {
	return Service{ID: "redis-10.0.0.1-6379", Name: "redis", Tags: tags,
		Meta: map[string]string{"role": tags[0]}, Address: "10.0.0.1", Port: 6379}
}

func TestRegistrarWritesOnlyChanges(t *testing.T) {
	f, srv := newFakeConsul(t)
	r := newTestRegistrar(t, srv.URL, "")
	ctx := context.Background()
	id := "redis-10.0.0.1-6379"
	replica := testService("replica", "m-replica")
	master := testService("master", "m-master")

	steps := []struct {
		name   string
		do     func() error
		writes []string
		output string // the check output in Consul afterwards
	}{
		{"first registration: what Consul holds is unknown, so all, and the registration again to send the output", func() error {
			return r.Update(ctx, replica, Health{Status: api.HealthPassing, Output: "offset=1"})
		}, []string{"register " + id, "ttl " + id + " passing", "register " + id}, "offset=1"},
		{"unchanged", func() error {
			return r.Update(ctx, replica, Health{Status: api.HealthPassing, Output: "offset=1"})
		}, nil, "offset=1"},
		{"output only waits for the refresh", func() error {
			return r.Update(ctx, replica, Health{Status: api.HealthPassing, Output: "offset=2"})
		}, nil, "offset=1"},
		{"refresh carries new numbers, which Consul holds back", func() error {
			r.refresh(ctx)
			return nil
		}, []string{"ttl " + id + " passing"}, "offset=1"},
		{"a new reason under the same status is sent at once", func() error {
			if err := r.Update(ctx, replica, Health{Status: api.HealthPassing, Output: "slow: offset=2"}); err != nil {
				return err
			}
			r.refresh(ctx)
			return nil
		}, []string{"ttl " + id + " passing", "register " + id}, "slow: offset=2"},
		{"status change is one write", func() error {
			return r.Update(ctx, replica, Health{Status: api.HealthWarning, Output: "link down"})
		}, []string{"ttl " + id + " warning"}, "link down"},
		{"role change: status and reason first, then the tags", func() error {
			return r.Update(ctx, master, Health{Status: api.HealthPassing, Output: "confirmed"})
		}, []string{"ttl " + id + " passing", "register " + id}, "confirmed"},
		{"nothing left for Run", func() error {
			r.retryDue(ctx)
			return nil
		}, nil, "confirmed"},
		{"role change to critical: status first, the master is critical before it loses its tags", func() error {
			return r.Update(ctx, testService("unknown"), Health{Status: api.HealthCritical, Output: "claims master"})
		}, []string{"ttl " + id + " critical", "register " + id}, "claims master"},
		{"meta change with the same status is one write", func() error {
			s := testService("unknown")
			s.Meta["redis_version"] = "7.0.15"
			return r.Update(ctx, s, Health{Status: api.HealthCritical, Output: "claims master"})
		}, []string{"register " + id}, "claims master"},
		{"a master demoted to a passing replica: tags first, so no passing master in between", func() error {
			if err := r.Update(ctx, master, Health{Status: api.HealthCritical, Output: "unreachable"}); err != nil {
				return err
			}
			f.take()
			return r.Update(ctx, replica, Health{Status: api.HealthPassing, Output: "replica again"})
		}, []string{"register " + id, "ttl " + id + " passing"}, "replica again"},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		writes, _ := f.take()
		if !slices.Equal(writes, st.writes) {
			t.Fatalf("%s: writes %q, want %q", st.name, writes, st.writes)
		}
		if c := f.check(id); c.Output != st.output {
			t.Fatalf("%s: output %q, want %q", st.name, c.Output, st.output)
		}
	}
	if c := f.check(id); c.Status != api.HealthPassing {
		t.Fatalf("check = %s %q", c.Status, c.Output)
	}
}

// TestRegistrarNeverAdvertisesTooEarly checks the order of the two writes of
// a role change: no intermediate state shows the master tag as passing
// unless the end state does (or the start state did: an output-only update
// of the old state shows nowhere new).
func TestRegistrarNeverAdvertisesTooEarly(t *testing.T) {
	f, srv := newFakeConsul(t)
	r := newTestRegistrar(t, srv.URL, "")
	ctx := context.Background()
	states := []struct {
		svc Service
		h   Health
	}{
		{testService("replica", "m-replica"), Health{Status: api.HealthPassing, Output: ""}},
		{testService("master", "m-master"), Health{Status: api.HealthPassing, Output: ""}},
		{testService("unknown"), Health{Status: api.HealthCritical, Output: ""}},
		{testService("master", "m-master"), Health{Status: api.HealthWarning, Output: ""}},
		{testService("replica", "m-replica"), Health{Status: api.HealthPassing, Output: ""}},
		{testService("master", "m-master"), Health{Status: api.HealthPassing, Output: ""}},
		{testService("replica", "m-replica"), Health{Status: api.HealthCritical, Output: ""}},
	}
	for i, s := range states {
		if err := r.Update(ctx, s.svc, s.h); err != nil {
			t.Fatal(err)
		}
		_, history := f.take()
		final := strings.Join(s.svc.Tags, ",") + " " + s.h.Status
		if len(history) == 0 || history[len(history)-1] != final {
			t.Fatalf("state %d: history %q does not end in %q", i, history, final)
		}
		start := ""
		if i > 0 {
			start = strings.Join(states[i-1].svc.Tags, ",") + " " + states[i-1].h.Status
		}
		for _, h := range history[:len(history)-1] {
			if h != start && strings.HasPrefix(h, "master,") && strings.HasSuffix(h, api.HealthPassing) {
				t.Fatalf("state %d: intermediate %q advertises a passing master (history %q)", i, h, history)
			}
		}
	}
}

func TestRegistrarRepairsLostRegistrations(t *testing.T) {
	f, srv := newFakeConsul(t)
	r := newTestRegistrar(t, srv.URL, "")
	ctx := context.Background()
	id := "redis-10.0.0.1-6379"
	svc := testService("master", "m-master")
	if err := r.Update(ctx, svc, Health{Status: api.HealthPassing, Output: "ok"}); err != nil {
		t.Fatal(err)
	}
	f.take()

	wipe := func() {
		f.mu.Lock()
		f.services, f.checks = map[string]*api.AgentService{}, map[string]*api.AgentCheck{}
		f.mu.Unlock()
	}

	// The Consul agent restarted without state: the resync notices.
	wipe()
	r.resync(ctx)
	if writes, _ := f.take(); !slices.Equal(writes, []string{"register " + id, "ttl " + id + " passing", "register " + id}) {
		t.Fatalf("after resync: writes %q", writes)
	}

	// A TTL refresh that finds no check registers again at once.
	wipe()
	r.refresh(ctx)
	writes, _ := f.take()
	if !slices.Contains(writes, "register "+id) {
		t.Fatalf("after refresh of a lost check: writes %q", writes)
	}
	if c := f.check(id); c.Status != api.HealthPassing || c.Output != "ok" {
		t.Fatalf("check after repair = %s %q", c.Status, c.Output)
	}

	// Someone edited our tags: the resync puts them back.
	f.mu.Lock()
	f.services[id].Tags = []string{"replica"}
	f.mu.Unlock()
	r.resync(ctx)
	if writes, _ := f.take(); !slices.Contains(writes, "register "+id) {
		t.Fatalf("after drift: writes %q", writes)
	}
}

func TestRegistrarRunRetriesWithBackoff(t *testing.T) {
	f, srv := newFakeConsul(t)
	r := newTestRegistrar(t, srv.URL, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	f.mu.Lock()
	f.failNext = 3
	f.mu.Unlock()
	svc := testService("master", "m-master")
	if err := r.Update(ctx, svc, Health{Status: api.HealthPassing, Output: ""}); err == nil {
		t.Fatal("Update succeeded against a failing Consul")
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.check(svc.ID).Status != api.HealthPassing {
		if time.Now().After(deadline) {
			t.Fatalf("not registered after retries; status %+v", r.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := r.Status()
	for len(st) != 1 || !st[0].Registered || st[0].LastError != "" {
		if time.Now().After(deadline) {
			t.Fatalf("status = %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
		st = r.Status()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRegistrarACLErrorIsClear(t *testing.T) {
	f, srv := newFakeConsul(t)
	f.token = "right"
	r := newTestRegistrar(t, srv.URL, "wrong")
	err := r.Update(context.Background(), testService("master", "m-master"), Health{Status: api.HealthPassing, Output: ""})
	want := `register redis-10.0.0.1-6379: consul denied the request (ACL token lacks service:write on "redis"?)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want it to contain %q", err, want)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("error leaks the token: %v", err)
	}
}

func TestRegistrarRemove(t *testing.T) {
	f, srv := newFakeConsul(t)
	r := newTestRegistrar(t, srv.URL, "")
	ctx := context.Background()
	a, b := registerPair(t, r, "")
	f.take()
	if err := r.Remove(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, a.ID); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	r.resync(ctx)
	if err := r.DeregisterAll(ctx); err != nil {
		t.Fatal(err)
	}
	writes, _ := f.take()
	if want := []string{"deregister " + a.ID, "deregister " + b.ID}; !slices.Equal(writes, want) {
		t.Fatalf("writes %q, want %q", writes, want)
	}
	if len(r.Status()) != 0 {
		t.Fatalf("status after DeregisterAll: %+v", r.Status())
	}
}

func TestTruncateOutput(t *testing.T) {
	long := strings.Repeat("a", 4095) + "é" + "tail"
	got := truncateOutput(long)
	if got != strings.Repeat("a", 4095) {
		t.Fatalf("cut inside a rune or kept too much: len %d", len(got))
	}
	if s := strings.Repeat("b", 4096); truncateOutput(s) != s {
		t.Fatal("cut output at the limit")
	}
	if got := truncateOutput(strings.Repeat("c", 5000)); len(got) != 4096 {
		t.Fatalf("len %d, want 4096", len(got))
	}
}

// TestRegistrarHeartbeat checks the heartbeat mode: one short TTL for the
// whole agent, services that alias it with a long status TTL, everything
// registered again when Consul loses the heartbeat, the heartbeat removed
// last, and the short TTLs back when the token may not register it.
// registerPair registers a master (a) and a replica (b), passing, with
// output out.
func registerPair(t *testing.T, r *Registrar, out string) (a, b Service) {
	t.Helper()
	a = testService("master", "m-master")
	b = testService("replica", "m-replica")
	b.ID = "redis-10.0.0.2-6379"
	for _, s := range []Service{a, b} {
		if err := r.Update(context.Background(), s, Health{Status: api.HealthPassing, Output: out}); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

func TestRegistrarHeartbeat(t *testing.T) {
	f, srv := newFakeConsul(t)
	c, err := NewConsulClient(ConsulOptions{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	hb := Service{ID: "redis-consul-agent-host-8765", Name: "redis-consul-agent"}
	newReg := func() *Registrar {
		r, err := NewRegistrar(RegistrarOptions{
			Client: c, TTL: 3 * time.Second, StatusTTL: time.Minute, Heartbeat: hb,
			Metrics: telemetry.Discard(), Journal: telemetry.NewJournal(100),
		})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newReg()
	ctx := context.Background()
	r.ensureHeartbeat(ctx) // Run's first act
	a, b := registerPair(t, r, "ok")
	writes, _ := f.take()
	var want []string
	for _, id := range []string{hb.ID, a.ID, b.ID} {
		want = append(want, "register "+id, "ttl "+id+" passing", "register "+id)
	}
	if !slices.Equal(writes, want) {
		t.Fatalf("first writes %q, want %q", writes, want)
	}
	for _, id := range []string{a.ID, b.ID} {
		cs := f.checksOf(id)
		if cs["alias"].alias != hb.ID || cs["ttl"].ttl != time.Minute {
			t.Fatalf("%s: checks %+v, want an alias of %s and a 1m TTL", id, cs, hb.ID)
		}
	}
	if d := f.checksOf(hb.ID)["ttl"].ttl; d != 3*time.Second {
		t.Fatalf("heartbeat TTL %s, want 3s", d)
	}

	// Idle: a refresh writes the heartbeat only.
	r.refresh(ctx)
	if writes, _ := f.take(); !slices.Equal(writes, []string{"ttl " + hb.ID + " passing"}) {
		t.Fatalf("idle refresh writes %q, want the heartbeat only", writes)
	}
	// New numbers in an output wait for the slow refresh; a new reason
	// goes out on the next tick.
	if err := r.Update(ctx, a, Health{Status: api.HealthPassing, Output: "ok, offset=7"}); err != nil {
		t.Fatal(err)
	}
	r.refresh(ctx)
	if err := r.Update(ctx, a, Health{Status: api.HealthPassing, Output: "ok, offset=8"}); err != nil {
		t.Fatal(err)
	}
	r.refresh(ctx)
	if writes, _ := f.take(); !slices.Equal(writes, []string{"ttl " + hb.ID + " passing", "ttl " + a.ID + " passing", "register " + a.ID, "ttl " + hb.ID + " passing"}) {
		t.Fatalf("refresh writes %q, want the new reason once, not the new offset", writes)
	}
	// A status check whose TTL would run out is refreshed, with its output.
	r.entries[a.ID].have.refreshed = time.Now().Add(-time.Minute/3 + time.Second)
	r.refresh(ctx)
	if writes, _ := f.take(); !slices.Equal(writes, []string{"ttl " + hb.ID + " passing", "ttl " + a.ID + " passing"}) {
		t.Fatalf("refresh writes %q, want the heartbeat and %s", writes, a.ID)
	}

	// The agent stops refreshing: every service goes critical through
	// its alias.
	f.mu.Lock()
	f.checks["service:"+hb.ID].Status = api.HealthCritical
	f.mu.Unlock()
	if st := f.check(a.ID).Status; st != api.HealthCritical {
		t.Fatalf("service status with a dead heartbeat: %s, want critical", st)
	}

	// The Consul agent lost everything: the heartbeat refresh notices and
	// everything comes back, the heartbeat first.
	f.mu.Lock()
	f.services, f.checks = map[string]*api.AgentService{}, map[string]*api.AgentCheck{}
	f.mu.Unlock()
	r.refresh(ctx)
	writes, _ = f.take()
	if len(writes) < 3 || writes[0] != "register "+hb.ID || !slices.Contains(writes, "register "+a.ID) || !slices.Contains(writes, "register "+b.ID) {
		t.Fatalf("writes after the loss %q, want the heartbeat registered first, then both services", writes)
	}
	if st := f.check(a.ID).Status; st != api.HealthPassing {
		t.Fatalf("status after re-registering: %s", st)
	}

	if err := r.DeregisterAll(ctx); err != nil {
		t.Fatal(err)
	}
	writes, _ = f.take()
	if want := []string{"deregister " + a.ID, "deregister " + b.ID, "deregister " + hb.ID}; !slices.Equal(writes, want) {
		t.Fatalf("stop writes %q, want %q", writes, want)
	}

	// A token without service:write on the heartbeat: short TTLs, no alias.
	f.refuse = []string{hb.Name}
	r = newReg()
	r.ensureHeartbeat(ctx)
	if err := r.Update(ctx, a, Health{Status: api.HealthPassing, Output: "ok"}); err != nil {
		t.Fatal(err)
	}
	cs := f.checksOf(a.ID)
	if _, ok := cs["alias"]; ok || cs["ttl"].ttl != 3*time.Second {
		t.Fatalf("checks without a heartbeat: %+v, want one 3s TTL check", cs)
	}
	f.take()
	r.refresh(ctx)
	if writes, _ := f.take(); !slices.Equal(writes, []string{"ttl " + a.ID + " passing"}) {
		t.Fatalf("refresh without a heartbeat writes %q", writes)
	}
}

// newHeartbeatRegistrar is a Registrar with a heartbeat (TTL 3s) on the
// fake Consul at url; o sets the other options.
func newHeartbeatRegistrar(t *testing.T, url string, o RegistrarOptions) (*Registrar, Service) {
	t.Helper()
	c, err := NewConsulClient(ConsulOptions{Address: url})
	if err != nil {
		t.Fatal(err)
	}
	o.Client, o.TTL, o.Heartbeat = c, 3*time.Second, Service{ID: "redis-consul-agent-host-8765", Name: "redis-consul-agent"}
	o.Metrics, o.Journal = telemetry.Discard(), telemetry.NewJournal(100)
	r, err := NewRegistrar(o)
	if err != nil {
		t.Fatal(err)
	}
	return r, o.Heartbeat
}

// TestRegistrarFailoverDoesNotWaitForHeartbeat: a role change is written at
// once while a heartbeat write hangs (a Consul agent that stopped answering
// that one request, a write that will time out): the failover write must not
// queue behind the heartbeat's writes.
func TestRegistrarFailoverDoesNotWaitForHeartbeat(t *testing.T) {
	f, srv := newFakeConsul(t)
	r, hb := newHeartbeatRegistrar(t, srv.URL, RegistrarOptions{WriteTimeout: 20 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.ensureHeartbeat(ctx)
	replica := testService("replica", "m-replica")
	if err := r.Update(ctx, replica, Health{Status: api.HealthPassing, Output: "replica of 10.0.0.2:6379"}); err != nil {
		t.Fatal(err)
	}
	if cs := f.checksOf(replica.ID); cs["alias"].alias != hb.ID {
		t.Fatalf("checks %+v, want an alias of the heartbeat", cs)
	}

	f.stalled, f.stallRelease = make(chan string, 4), make(chan struct{})
	defer close(f.stallRelease)
	stall := checkID(hb.ID)
	f.stall.Store(&stall)
	refreshed := make(chan struct{})
	go func() { r.refresh(ctx); close(refreshed) }()
	select {
	case <-f.stalled:
	case <-time.After(5 * time.Second):
		t.Fatal("the heartbeat refresh never reached Consul")
	}

	start := time.Now()
	uctx, ucancel := context.WithTimeout(ctx, 2*time.Second)
	defer ucancel()
	master := testService("master", "m-master")
	err := r.Update(uctx, master, Health{Status: api.HealthPassing, Output: "master, confirmed by Sentinel"})
	took := time.Since(start)
	t.Logf("role change written in %s while the heartbeat write hangs", took)
	if err != nil {
		t.Fatalf("Update while the heartbeat write hangs: %v (after %s)", err, took)
	}
	if took > time.Second {
		t.Fatalf("Update took %s behind a hanging heartbeat write", took)
	}
	f.mu.Lock()
	tags := f.services[master.ID].Tags
	got := *f.checks[stall[:len("service:")]+master.ID]
	f.mu.Unlock()
	if got.Status != api.HealthPassing || got.Output != "master, confirmed by Sentinel" {
		t.Fatalf("check after the role change = %s %q", got.Status, got.Output)
	}
	if !slices.Equal(tags, master.Tags) {
		t.Fatalf("tags %q, want %q", tags, master.Tags)
	}
	f.stall.Store(nil)
	cancel()
	<-refreshed
}

// TestRegistrarLapsedMasterWaitsForAFreshDecision: the agent did not run
// for longer than the heartbeat's TTL, so Consul turned every alias
// critical and DNS dropped the master. Before the heartbeat is refreshed
// (which would bring back the registration decided before the lapse), the
// master's own check is written critical; nothing more is written for it
// until its owner has asked Lapsed and sent a decision made since. A
// replica is not held. If marking fails, the heartbeat waits.
func TestRegistrarLapsedMasterWaitsForAFreshDecision(t *testing.T) {
	f, srv := newFakeConsul(t)
	r, hb := newHeartbeatRegistrar(t, srv.URL, RegistrarOptions{StatusTTL: time.Minute})
	ctx := context.Background()
	r.ensureHeartbeat(ctx)
	a, b := registerPair(t, r, "ok")
	f.take()
	lapse := func() {
		r.hb.io.Lock()
		r.hb.e.have.refreshed = time.Now().Add(-4 * time.Second)
		r.hb.io.Unlock()
	}

	// Marking fails: the heartbeat is not refreshed either.
	lapse()
	f.mu.Lock()
	f.failNext = 1
	f.mu.Unlock()
	r.refresh(ctx)
	if writes, _ := f.take(); len(writes) != 0 {
		t.Fatalf("writes after a failed mark %q, want none (the heartbeat must wait)", writes)
	}
	if r.Lapsed(a.ID) {
		t.Fatal("lapsed before the mark was written")
	}

	r.refresh(ctx)
	writes, _ := f.take()
	if want := []string{"ttl " + a.ID + " critical", "ttl " + hb.ID + " passing"}; !slices.Equal(writes, want) {
		t.Fatalf("refresh after a lapse writes %q, want %q (the master critical before the heartbeat)", writes, want)
	}
	if out := f.check(a.ID).Output; !strings.Contains(out, "Consul took the master tag away") {
		t.Fatalf("lapsed master's output %q", out)
	}
	// A decision its owner made before learning of the lapse: not written,
	// nor by the next refresh.
	if err := r.Update(ctx, a, Health{Status: api.HealthPassing, Output: "ok"}); err != nil {
		t.Fatal(err)
	}
	r.refresh(ctx)
	if writes, _ := f.take(); !slices.Equal(writes, []string{"ttl " + hb.ID + " passing"}) {
		t.Fatalf("writes while the master is held %q, want the heartbeat only", writes)
	}
	if r.Lapsed(b.ID) {
		t.Fatal("a replica's registration counted as lapsed")
	}
	if !r.Lapsed(a.ID) {
		t.Fatal("the master's lapse not reported")
	}
	fresh := testService("unknown")
	fresh.ID = a.ID
	if err := r.Update(ctx, fresh, Health{Status: api.HealthWarning, Output: "claims master, but no Sentinel truth names it"}); err != nil {
		t.Fatal(err)
	}
	if writes, _ := f.take(); !slices.Contains(writes, "register "+a.ID) {
		t.Fatalf("the decision made after Lapsed was not written: %q", writes)
	}
	if r.Lapsed(a.ID) {
		t.Fatal("still lapsed after a fresh decision")
	}
}
