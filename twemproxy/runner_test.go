package twemproxy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// runnerEnv is a Runner wired to fakes, with a real nutcracker validating.
type runnerEnv struct {
	t       *testing.T
	file    string
	src     *fakeSource
	proxy   *fakeNutcracker
	reg     *fakeRegistry
	metrics *telemetry.Metrics
	journal *telemetry.Journal
	runner  *Runner
	cancel  context.CancelFunc
	done    chan error
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func twoPoolConfig(l1, l2 string) string {
	return fmt.Sprintf(`# cache tier
alpha:                  # weights matter here
  listen: %s
  hash: fnv1a_64
  hash_tag: "{}"
  distribution: ketama
  redis: true
  redis_auth: pw
  timeout: 400
  servers:
   - 127.0.0.1:7001:2 shard-a   # A
   - 127.0.0.1:7002:1 shard-b
beta:
  listen: %s
  redis: true
  servers:
   - 127.0.0.1:7002:1 shard-b
`, l1, l2)
}

func newRunnerEnv(t *testing.T, config string, masters map[string]string, tweak func(*Options)) *runnerEnv {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "nutcracker.yml")
	if config != "" {
		if err := os.WriteFile(file, []byte(config), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	e := &runnerEnv{
		t: t, file: file, src: newFakeSource(masters),
		proxy: &fakeNutcracker{t: t, file: file}, reg: newFakeRegistry(),
		metrics: telemetry.Discard(), journal: telemetry.NewJournal(100),
		logs: &syncBuffer{},
	}
	o := Options{
		Name: "main", Node: "node-1", ConfigFile: file,
		NutcrackerBin: nutcrackerBin(t),
		Proxy:         e.proxy, Registry: e.reg, Masters: e.src,
		CheckInterval: 20 * time.Millisecond, ProbeTimeout: 2 * time.Second,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		Logger:  hclog.New(&hclog.LoggerOptions{Output: e.logs, Level: hclog.Debug}),
		Metrics: e.metrics, Journal: e.journal,
	}
	if tweak != nil {
		tweak(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.runner = r
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("runner log:\n%s", e.logs.String())
		}
	})
	return e
}

// start runs the runner with the fake proxy already serving, as an
// externally managed nutcracker would be.
func (e *runnerEnv) start() {
	if err := e.proxy.Restart(context.Background()); err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	e.proxy.mu.Lock()
	e.proxy.restarts = 0
	e.proxy.mu.Unlock()
	e.startOnly()
}

func (e *runnerEnv) startOnly() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- e.runner.Run(ctx) }()
}

func (e *runnerEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Errorf("Run did not return after cancel")
	}
	e.cancel = nil
}

func (e *runnerEnv) read() string {
	b, err := os.ReadFile(e.file)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *runnerEnv) health(pool string) consulreg.Health {
	_, h, _ := e.reg.get(ServiceID("node-1", pool))
	return h
}

func TestRunnerFollowsAFailover(t *testing.T) {
	l1, l2 := freeAddr(t), freeAddr(t)
	orig := twoPoolConfig(l1, l2)
	e := newRunnerEnv(t, orig, map[string]string{"shard-a": "127.0.0.1:7001", "shard-b": "127.0.0.1:7002"}, nil)
	e.start()

	waitFor(t, 5*time.Second, "both pools passing", func() bool {
		return e.health("alpha").Status == consulreg.Passing && e.health("beta").Status == consulreg.Passing
	})
	svc, _, _ := e.reg.get(ServiceID("node-1", "alpha"))
	host, port, _ := strings.Cut(l1, ":")
	if svc.Name != "twemproxy" || svc.Address != host || fmt.Sprint(svc.Port) != port || svc.Tags[0] != "alpha" || svc.ID != "twemproxy-node-1-alpha" {
		t.Errorf("service: %+v", svc)
	}
	if restarts, _ := e.proxy.counts(); restarts != 0 {
		t.Fatalf("unchanged file restarted the proxy %d times", restarts)
	}

	e.journal.Failover("shard-a", "127.0.0.1:7001", "127.0.0.1:7101", time.Now())
	e.src.set("shard-a", "127.0.0.1:7101")
	waitFor(t, 5*time.Second, "the rewrite", func() bool { r, _ := e.proxy.counts(); return r == 1 })
	want := strings.Replace(orig, "127.0.0.1:7001:2", "127.0.0.1:7101:2", 1)
	if got := e.read(); got != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
	if got := string(e.proxy.loadedConfig()); got != want {
		t.Errorf("proxy loaded an other config")
	}
	backup, _ := os.ReadFile(e.file + BackupSuffix)
	if string(backup) != orig {
		t.Errorf("backup is not the previous file")
	}
	if st, _ := os.Stat(e.file); st.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v", st.Mode().Perm())
	}
	waitFor(t, 5*time.Second, "status", func() bool {
		st := e.runner.Status()
		return st.LastRun != nil && st.LastRestart != nil && len(st.Pools) == 2 && st.ConfigSHA256 == sha([]byte(want))
	})
	st := e.runner.Status()
	if st.LastRun.Result != "ok" || len(st.LastRun.Changes) != 1 || st.LastRestart.Reason != "rewrite" || st.Restarts != 1 {
		t.Errorf("status: %+v %+v", st.LastRun, st.LastRestart)
	}
	if f := e.journal.Failovers(); f[0].TwemproxyAt.IsZero() {
		t.Errorf("failover not marked applied: %+v", f)
	}
	if n := histogramCount(e.metrics.Reaction.WithLabelValues("twemproxy")); n != 1 {
		t.Errorf("reaction observations: %d", n)
	}
	if v := metricValue(e.metrics.ProxyConfigWrites.WithLabelValues("main")); v != 1 {
		t.Errorf("config writes: %v", v)
	}
	waitFor(t, 5*time.Second, "passing after the rewrite", func() bool { return e.health("alpha").Status == consulreg.Passing })
	t.Logf("restart %.3fms, blackout %.3fms, run %.3fms", st.LastRestart.DurationMS, st.LastRestart.BlackoutMS, st.LastRun.DurationMS)

	// The same truth again: nothing happens.
	e.src.set("shard-a", "127.0.0.1:7101")
	time.Sleep(100 * time.Millisecond)
	if r, _ := e.proxy.counts(); r != 1 {
		t.Errorf("a repeated truth restarted the proxy")
	}

	e.stop()
	if _, stops := e.proxy.counts(); stops != 1 {
		t.Errorf("proxy stopped %d times on shutdown", stops)
	}
	if _, _, ok := e.reg.get(ServiceID("node-1", "alpha")); ok {
		t.Errorf("pool still registered after shutdown")
	}
}

func TestRunnerStormCoalesces(t *testing.T) {
	const n = 200
	l1 := freeAddr(t)
	var b strings.Builder
	fmt.Fprintf(&b, "big:\n  listen: %s\n  redis: true\n  servers:\n", l1)
	masters := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("m%03d", i)
		fmt.Fprintf(&b, "   - 127.0.0.1:%d:1 %s\n", 10000+i, name)
		masters[name] = fmt.Sprintf("127.0.0.1:%d", 10000+i)
	}
	e := newRunnerEnv(t, b.String(), masters, nil)
	e.start()
	waitFor(t, 5*time.Second, "pool passing", func() bool { return e.health("big").Status == consulreg.Passing })

	start := time.Now()
	// A pause of this loop longer than Wait.Settle (50ms by default) ends
	// the burst by definition, which a loaded machine can cause: each one
	// may cost a restart more.
	const settle = 50 * time.Millisecond
	splits, last := 0, start
	for i := range n {
		e.src.set(fmt.Sprintf("m%03d", i), fmt.Sprintf("127.0.0.1:%d", 20000+i))
		now := time.Now()
		if now.Sub(last) >= settle {
			splits++
		}
		last = now
		for time.Since(start) < time.Duration(i+1)*100*time.Millisecond/n {
			time.Sleep(100 * time.Microsecond)
		}
	}
	storm := time.Since(start)
	waitFor(t, 5*time.Second, "every master applied", func() bool {
		pools, err := Pools([]byte(e.read()))
		if err != nil {
			return false
		}
		for i, s := range pools[0].Servers {
			if s.Port != 20000+i {
				return false
			}
		}
		return true
	})
	applied := time.Since(start)
	// The run restarts the proxy after it wrote the file: count the
	// restarts once the proxy loaded the final file.
	waitFor(t, 5*time.Second, "the proxy restarted on the final file", func() bool { return string(e.proxy.loadedConfig()) == e.read() })
	restarts, _ := e.proxy.counts()
	t.Logf("%d switches in %s: %d restarts, all applied after %s", n, storm.Round(time.Millisecond), restarts, applied.Round(time.Millisecond))
	if splits > 0 {
		t.Logf("the storm paused %d times for %s or more", splits, settle)
	}
	if restarts > 2+splits {
		t.Errorf("%d restarts for one storm, want at most 2", restarts)
	}
	if applied > time.Second+storm {
		t.Errorf("applied after %s, want within 1s of the storm", applied)
	}
	// The first switch was acted on at once, not held for the storm.
	waitFor(t, 5*time.Second, "journal", func() bool { return len(rewrites(e.journal)) == restarts })
	if first := rewrites(e.journal)[0]; restarts > 1 && strings.Contains(first, "more") {
		t.Errorf("the first run waited for the storm: %s", first)
	}
}

func TestRunnerRollsBackWhenTheProxyDoesNotAnswer(t *testing.T) {
	l1, l2 := freeAddr(t), freeAddr(t)
	orig := twoPoolConfig(l1, l2)
	e := newRunnerEnv(t, orig, map[string]string{"shard-a": "127.0.0.1:7001", "shard-b": "127.0.0.1:7002"}, func(o *Options) {
		o.ProbeTimeout = 150 * time.Millisecond
		o.RetryMin, o.RetryMax = time.Hour, time.Hour
	})
	e.proxy.refuse = "127.0.0.1:7666"
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("alpha").Status == consulreg.Passing })

	e.src.set("shard-a", "127.0.0.1:7666")
	waitFor(t, 5*time.Second, "the rollback", func() bool { return e.runner.Status().Rollbacks == 1 })
	if got := e.read(); got != orig {
		t.Errorf("file not restored:\n%s", got)
	}
	if got := string(e.proxy.loadedConfig()); got != orig {
		t.Errorf("proxy not restarted on the old file")
	}
	st := e.runner.Status()
	if st.LastRun.Result != "rolled-back" || st.LastRun.Step != "probe" || !strings.Contains(st.LastError, "does not answer") {
		t.Errorf("status: %+v, last error %q", st.LastRun, st.LastError)
	}
	if v := metricValue(e.metrics.ProxyRollbacks.WithLabelValues("main", "probe")); v != 1 {
		t.Errorf("rollbacks metric: %v", v)
	}
	if v := metricValue(e.metrics.ProxyPipelineFailures.WithLabelValues("main", "probe")); v != 1 {
		t.Errorf("failures metric: %v", v)
	}
	waitFor(t, 5*time.Second, "warning in Consul", func() bool {
		h := e.health("alpha")
		return h.Status == consulreg.Warning && strings.Contains(h.Output, "shard-a is 127.0.0.1:7001 but Sentinel says 127.0.0.1:7666") &&
			strings.Contains(h.Output, "probe failed")
	})
	if ev := e.journal.Events(); !hasEvent(ev, "rollback", "error") {
		t.Errorf("no rollback event in the journal: %+v", ev)
	}
	if !strings.Contains(e.logs.String(), "[ERROR] twemproxy: pipeline failed") {
		t.Errorf("no error log line")
	}
}

func hasEvent(evs []telemetry.Event, typ, level string) bool {
	for _, e := range evs {
		if e.Kind == telemetry.KindTwemproxy && e.Type == typ && e.Level == level {
			return true
		}
	}
	return false
}

func TestRunnerRejectedConfigKeepsTheOldFile(t *testing.T) {
	l1 := freeAddr(t)
	tmpl := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  hashing: md5\n  servers:\n   - {{ server \"shard-a\" 1 }}\n", l1)
	orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 shard-a\n", l1)
	e := newRunnerEnv(t, orig, map[string]string{"shard-a": "127.0.0.1:7001"}, func(o *Options) {
		o.TemplateText = tmpl
		o.RetryMin, o.RetryMax = time.Hour, time.Hour
	})
	e.start()
	// The error is noted just after the failure is counted: wait for both.
	waitFor(t, 5*time.Second, "the failed validation", func() bool {
		return metricValue(e.metrics.ProxyPipelineFailures.WithLabelValues("main", "validate")) == 1 && e.runner.Status().LastError != ""
	})
	if got := e.read(); got != orig {
		t.Errorf("file changed:\n%s", got)
	}
	if r, _ := e.proxy.counts(); r != 0 {
		t.Errorf("proxy restarted %d times", r)
	}
	st := e.runner.Status()
	for _, want := range []string{"validate failed", "syntax is invalid", `unknown key "hashing"`} {
		if !strings.Contains(st.LastError, want) {
			t.Errorf("last error %q lacks %q", st.LastError, want)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(e.file))
	for _, en := range entries {
		if strings.Contains(en.Name(), tempInfix) {
			t.Errorf("temp file left: %s", en.Name())
		}
	}
}

func TestRunnerWaitMinHoldsTheFirstRun(t *testing.T) {
	l1 := freeAddr(t)
	orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 a\n   - 127.0.0.1:7002:1 b\n", l1)
	// The second change must come within Min of the first: Min leaves a
	// 50ms sleep plenty of room to wake up late on a loaded machine.
	const minWait, gap = 500 * time.Millisecond, 50 * time.Millisecond
	e := newRunnerEnv(t, orig, map[string]string{"a": "127.0.0.1:7001", "b": "127.0.0.1:7002"}, func(o *Options) {
		o.Wait = Wait{Min: minWait, Max: time.Second}
	})
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("main").Status == consulreg.Passing })
	start := time.Now()
	e.src.set("a", "127.0.0.1:7101")
	time.Sleep(gap)
	e.src.set("b", "127.0.0.1:7102")
	waitFor(t, 5*time.Second, "the rewrite", func() bool { r, _ := e.proxy.counts(); return r >= 1 })
	took := time.Since(start)
	if took < gap+minWait-10*time.Millisecond {
		t.Errorf("ran after %s, before the quiet period ended", took)
	}
	time.Sleep(100 * time.Millisecond)
	if r, _ := e.proxy.counts(); r != 1 {
		t.Errorf("%d restarts, want 1", r)
	}
	if got := e.read(); !strings.Contains(got, "7101:1 a") || !strings.Contains(got, "7102:1 b") {
		t.Errorf("file: %s", got)
	}
}

func TestRunnerCriticalWhenThePoolDoesNotAnswer(t *testing.T) {
	l1 := freeAddr(t)
	orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 a\n", l1)
	e := newRunnerEnv(t, orig, map[string]string{"a": "127.0.0.1:7001"}, nil)
	e.startOnly()
	waitFor(t, 5*time.Second, "critical", func() bool {
		h := e.health("main")
		return h.Status == consulreg.Critical && strings.Contains(h.Output, "does not answer PING")
	})
	// The fake starts listening once restarted.
	if err := e.proxy.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("main").Status == consulreg.Passing })
}

func TestRunnerTemplateMode(t *testing.T) {
	l1 := freeAddr(t)
	e := newRunnerEnv(t, "", map[string]string{"shard-b": "127.0.0.1:7002", "shard-a": "127.0.0.1:7001"}, func(o *Options) {
		text, err := os.ReadFile("../templates/nutcracker.yml.tmpl")
		if err != nil {
			t.Fatal(err)
		}
		o.TemplateText = string(text)
	})
	// A first file fixes the pool name and listen address.
	if err := os.WriteFile(e.file, []byte(fmt.Sprintf("edge:\n  listen: %s\n  servers:\n   - 127.0.0.1:1:1 x\n", l1)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()
	waitFor(t, 5*time.Second, "rendered file", func() bool { return strings.Contains(e.read(), "shard-b") })
	got := e.read()
	for _, want := range []string{"edge:\n  listen: " + l1, "   - 127.0.0.1:7001:1 shard-a\n   - 127.0.0.1:7002:1 shard-b\n", "for main."} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered file lacks %q:\n%s", want, got)
		}
	}
	e.src.set("shard-a", "127.0.0.1:7201")
	waitFor(t, 5*time.Second, "re-render", func() bool {
		st := e.runner.Status()
		return st.LastRun != nil && len(st.LastRun.Changes) == 1 && st.LastRun.Changes[0].To == "127.0.0.1:7201"
	})
	if got := e.read(); !strings.Contains(got, "127.0.0.1:7201:1 shard-a") {
		t.Errorf("file: %s", got)
	}
}

func TestNewRunnerOptions(t *testing.T) {
	src := newFakeSource(nil)
	m := telemetry.Discard()
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no file", Options{Masters: src, Metrics: m}, "config file is required"},
		{"no source", Options{ConfigFile: "/x.yml", Metrics: m}, "master source is required"},
		{"no metrics", Options{ConfigFile: "/x.yml", Masters: src}, "metrics are required"},
		{"wait order", Options{ConfigFile: "/x.yml", Masters: src, Metrics: m, Wait: Wait{Min: 2 * time.Second, Max: time.Second}}, "min 2s is greater than max 1s"},
		{"mode", Options{ConfigFile: "/x.yml", Masters: src, Metrics: m, Restart: RestartOptions{Mode: "reboot"}}, `restart mode "reboot"`},
		{"command", Options{ConfigFile: "/x.yml", Masters: src, Metrics: m, Restart: RestartOptions{Mode: ModeCommand}}, "needs a command"},
		{"daemonize", Options{ConfigFile: "/x.yml", Masters: src, Metrics: m, Restart: RestartOptions{Command: []string{"nutcracker", "-d"}}}, "daemonizes"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	r, err := New(Options{ConfigFile: "/etc/nutcracker/edge.yml", Masters: src, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if r.o.Name != "edge" || r.mode != ModeSupervise || r.o.Wait.Max != time.Second || r.o.Wait.Settle != 50*time.Millisecond {
		t.Errorf("defaults: %+v", r.o)
	}
}

func TestServiceID(t *testing.T) {
	if got := ServiceID("cache-1.dc", "pool a/b"); got != "twemproxy-cache-1.dc-pool-a-b" {
		t.Errorf("ServiceID = %q", got)
	}
}

// metricValue reads a counter or gauge without prometheus/testutil, whose
// dependencies are not in go.mod.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return -1
}

func histogramCount(o prometheus.Observer) uint64 {
	var d dto.Metric
	if err := o.(prometheus.Metric).Write(&d); err != nil || d.Histogram == nil {
		return 0
	}
	return d.Histogram.GetSampleCount()
}

func rewrites(j *telemetry.Journal) []string {
	var out []string
	for _, e := range j.Events() {
		if e.Kind == telemetry.KindTwemproxy && e.Type == "rewrite" {
			out = append(out, e.Detail)
		}
	}
	return out
}

func TestRunnerWarnsOnStaleTruth(t *testing.T) {
	l1 := freeAddr(t)
	orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 a\n", l1)
	e := newRunnerEnv(t, orig, map[string]string{"a": "127.0.0.1:7001"}, nil)
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("main").Status == consulreg.Passing })
	e.src.mu.Lock()
	e.src.masters["a"] = Master{Addr: "127.0.0.1:7999", Stale: true}
	e.src.mu.Unlock()
	e.src.set("b", "127.0.0.1:7002") // any notification
	waitFor(t, 5*time.Second, "warning", func() bool {
		h := e.health("main")
		return h.Status == consulreg.Warning && strings.Contains(h.Output, "have not confirmed a lately")
	})
	if r, _ := e.proxy.counts(); r != 0 || e.read() != orig {
		t.Errorf("acted on a stale truth: %d restarts", r)
	}
}

// TestRunnerRestartsWhenARestartWasPending: an agent that died between the
// rename and the restart leaves a marker; the next one restarts the proxy
// although the file is already current.
func TestRunnerRestartsWhenARestartWasPending(t *testing.T) {
	l1 := freeAddr(t)
	orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 a\n", l1)
	e := newRunnerEnv(t, orig, map[string]string{"a": "127.0.0.1:7001"}, nil)
	if err := os.WriteFile(pendingMarker(e.file), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.start()
	waitFor(t, 5*time.Second, "the pending restart", func() bool { r, _ := e.proxy.counts(); return r == 1 })
	waitFor(t, 5*time.Second, "the marker removed", func() bool {
		_, err := os.Stat(pendingMarker(e.file))
		return os.IsNotExist(err)
	})
	if e.read() != orig {
		t.Error("file changed")
	}
}

func TestRunnerRollsBackWhenTheRestartFails(t *testing.T) {
	l1 := freeAddr(t)
	orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 a\n", l1)
	e := newRunnerEnv(t, orig, map[string]string{"a": "127.0.0.1:7001"}, func(o *Options) {
		o.RetryMin, o.RetryMax = time.Hour, time.Hour
	})
	e.start()
	waitFor(t, 5*time.Second, "passing", func() bool { return e.health("main").Status == consulreg.Passing })
	calls := 0
	e.proxy.mu.Lock()
	e.proxy.restartFn = func() error {
		calls++
		if calls == 1 {
			return fmt.Errorf("systemctl: unit nutcracker.service failed")
		}
		return nil
	}
	e.proxy.mu.Unlock()
	e.src.set("a", "127.0.0.1:7101")
	waitFor(t, 5*time.Second, "the rollback", func() bool { return e.runner.Status().Rollbacks == 1 })
	st := e.runner.Status()
	if st.LastRun.Result != "rolled-back" || st.LastRun.Step != "restart" || !strings.Contains(st.LastRun.Error, "unit nutcracker.service failed") {
		t.Errorf("last run: %+v", st.LastRun)
	}
	if e.read() != orig || string(e.proxy.loadedConfig()) != orig {
		t.Error("the previous config is not back in place")
	}
	if _, err := os.Stat(pendingMarker(e.file)); !os.IsNotExist(err) {
		t.Errorf("pending marker after a successful rollback: %v", err)
	}
}
