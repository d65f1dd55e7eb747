package haproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

type driverEnv struct {
	api    *fakeAPI
	truth  *fakeTruth
	reg    *fakeRegistry
	m      *Metrics
	d      *Driver
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

const frontendID = "haproxy-node-1-edge"

func startDriver(t *testing.T, api *fakeAPI, truth *fakeTruth, servers ...Server) *driverEnv {
	t.Helper()
	e := &driverEnv{api: api, truth: truth, reg: &fakeRegistry{}, m: NewMetrics(prometheus.NewRegistry())}
	var err error
	e.d, err = New(Options{
		Name: "edge", Node: "node-1", RuntimeAPI: api.path, Servers: servers, Truth: truth, Registry: e.reg,
		Timeout: 500 * time.Millisecond, ReconcileInterval: 100 * time.Millisecond, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Metrics: e.m,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(1)
	go func() { defer e.wg.Done(); _ = e.d.Run(ctx) }()
	t.Cleanup(e.stop)
	return e
}

func (e *driverEnv) stop() { e.cancel(); e.wg.Wait() }

func (e *driverEnv) health(t *testing.T, status, contains string) {
	t.Helper()
	eventually(t, "frontend check "+status, func() error {
		h, ok := e.reg.get(frontendID)
		if !ok {
			return errors.New("not registered")
		}
		if h.Status != status || !strings.Contains(h.Output, contains) {
			return fmt.Errorf("check is %s: %s", h.Status, h.Output)
		}
		return nil
	})
}

var rw = Server{Backend: "redis-rw", Server: "mymaster", MasterName: "mymaster"}

// A truth change moves the server, shuts down its sessions, and the check
// passes; a stale truth afterwards moves nothing and warns.
func TestDriverFollowsTruth(t *testing.T) {
	api := newFakeAPI(t, ServerState{Backend: "redis-rw", Server: "mymaster", Addr: "10.0.0.1:6379", OpState: OpRunning},
		ServerState{Backend: "other", Server: "x", Addr: "10.0.0.7:6379", OpState: OpRunning})
	truth := &fakeTruth{}
	truth.set("mymaster", Master{Addr: "10.0.0.1:6379"})
	e := startDriver(t, api, truth, rw)
	e.health(t, consulreg.Passing, "1 servers follow Sentinel: redis-rw/mymaster at 10.0.0.1:6379")
	if n := api.took("set server"); n != 0 {
		t.Fatalf("%d set server commands while HAProxy matched", n)
	}

	truth.set("mymaster", Master{Addr: "10.0.0.2:6379", Since: time.Now()})
	eventually(t, "server moved", func() error {
		if a := api.addrOf("redis-rw/mymaster"); a != "10.0.0.2:6379" {
			return fmt.Errorf("at %s", a)
		}
		if api.took("shutdown sessions server redis-rw/mymaster") != 1 {
			return errors.New("sessions not shut down")
		}
		return nil
	})
	e.health(t, consulreg.Passing, "at 10.0.0.2:6379")
	if a := api.addrOf("other/x"); a != "10.0.0.7:6379" {
		t.Errorf("an unmanaged server moved to %s", a)
	}
	if got := value(e.m.Moves.WithLabelValues("edge", "redis-rw", "mymaster")); got != 1 {
		t.Errorf("moves = %v, want 1", got)
	}
	if st := e.d.Status(); st.LastMove == nil || st.LastMove.To != "10.0.0.2:6379" || !st.Reachable {
		t.Errorf("status %+v", st)
	}

	// The old master returns and the truth goes stale pointing at it (or
	// anywhere): nothing moves, the check warns.
	truth.set("mymaster", Master{Addr: "10.0.0.1:6379", Stale: true})
	e.health(t, consulreg.Warning, "have not confirmed mymaster lately")
	if a := api.addrOf("redis-rw/mymaster"); a != "10.0.0.2:6379" {
		t.Fatalf("moved on a stale truth to %s", a)
	}
}

// HAProxy restarted with its original config: the slow tick puts it right.
func TestDriverReconcilesOnTick(t *testing.T) {
	api := newFakeAPI(t, ServerState{Backend: "redis-rw", Server: "mymaster", Addr: "10.0.0.1:6379", OpState: OpStopped, CheckState: CheckEnabled})
	truth := &fakeTruth{}
	truth.set("mymaster", Master{Addr: "10.0.0.2:6379"})
	e := startDriver(t, api, truth, rw)
	e.health(t, consulreg.Passing, "at 10.0.0.2:6379")
	if api.took("set server redis-rw/mymaster health up") != 1 {
		t.Errorf("a checked server held down at the old address was not marked up")
	}
	api.set("redis-rw/mymaster", "10.0.0.1:6379")
	eventually(t, "reconciled on the tick", func() error {
		if a := api.addrOf("redis-rw/mymaster"); a != "10.0.0.2:6379" {
			return fmt.Errorf("at %s", a)
		}
		return nil
	})
}

// A server HAProxy lacks is a clear error and a critical check; the others
// still move.
func TestDriverUnknownServer(t *testing.T) {
	api := newFakeAPI(t, ServerState{Backend: "redis-rw", Server: "mymaster", Addr: "10.0.0.1:6379", OpState: OpRunning})
	truth := &fakeTruth{}
	truth.set("mymaster", Master{Addr: "10.0.0.2:6379"})
	wrong := Server{Backend: "redis-rww", Server: "mymaster", MasterName: "mymaster"}
	e := startDriver(t, api, truth, rw, wrong)
	e.health(t, consulreg.Critical, "HAProxy has no server redis-rww/mymaster")
	eventually(t, "the known server moved", func() error {
		if a := api.addrOf("redis-rw/mymaster"); a != "10.0.0.2:6379" {
			return fmt.Errorf("at %s", a)
		}
		return nil
	})
	if st := e.d.Status(); !strings.Contains(st.LastError, "has no server redis-rww/mymaster") {
		t.Errorf("status error %q", st.LastError)
	}
}

// An unreachable runtime API: critical, the up gauge 0, retried; once it
// answers again the driver reconciles at once.
func TestDriverUnreachable(t *testing.T) {
	api := newFakeAPI(t, ServerState{Backend: "redis-rw", Server: "mymaster", Addr: "10.0.0.1:6379", OpState: OpRunning})
	truth := &fakeTruth{}
	truth.set("mymaster", Master{Addr: "10.0.0.1:6379"})
	e := startDriver(t, api, truth, rw)
	e.health(t, consulreg.Passing, "")
	api.stop()
	e.health(t, consulreg.Critical, "does not answer")
	if got := value(e.m.Up.WithLabelValues("edge")); got != 0 {
		t.Errorf("up = %v, want 0", got)
	}
	if e.d.Status().Reachable {
		t.Error("status says reachable")
	}
	// HAProxy comes back with the server at another address than the truth.
	truth.set("mymaster", Master{Addr: "10.0.0.2:6379"})
	api.listen(t)
	e.health(t, consulreg.Passing, "at 10.0.0.2:6379")
	if got := value(e.m.Up.WithLabelValues("edge")); got != 1 {
		t.Errorf("up = %v, want 1", got)
	}
}

// On shutdown every frontend is deregistered.
func TestDriverDeregistersOnStop(t *testing.T) {
	api := newFakeAPI(t, ServerState{Backend: "redis-rw", Server: "mymaster", Addr: "10.0.0.1:6379", OpState: OpRunning})
	truth := &fakeTruth{}
	truth.set("mymaster", Master{Addr: "10.0.0.1:6379"})
	e := startDriver(t, api, truth, rw)
	e.health(t, consulreg.Passing, "")
	e.stop()
	if _, ok := e.reg.get(frontendID); ok {
		t.Fatal("still registered after stop")
	}
}

func TestNewChecks(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	ok := Options{Name: "e", RuntimeAPI: "/x", Servers: []Server{rw}, Truth: &fakeTruth{}, Metrics: m}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no runtime api", func(o *Options) { o.RuntimeAPI = "" }, "runtime_api is required"},
		{"no servers", func(o *Options) { o.Servers = nil }, "no servers"},
		{"no metrics", func(o *Options) { o.Metrics = nil }, "metrics are required"},
		{"no truth", func(o *Options) { o.Truth = nil }, "truth is required"},
		{"twice", func(o *Options) { o.Servers = []Server{rw, rw} }, "listed twice"},
	} {
		o := ok
		tc.edit(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
}

func TestClientRefusesInjection(t *testing.T) {
	c := &Client{Addr: "/nonexistent"}
	if _, err := c.Do(context.Background(), "show servers state; shutdown sessions server a/b"); err == nil {
		t.Fatal("a second command was accepted")
	}
}

// value reads a counter or gauge without prometheus/testutil, whose
// dependencies the module does not carry.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
