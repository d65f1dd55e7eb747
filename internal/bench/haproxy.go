package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// FigHAProxy is figure 7: HAProxy driven by the agent next to HAProxy's own
// role check, in the same HAProxy, through the same kill -9 runs.
const FigHAProxy = "haproxy"

// hxRun is one kill -9 run as two clients saw it: one through the
// agent-driven backend, one through the role-check backend.
type hxRun struct {
	firstDriven, firstRef time.Duration // kill -9 → first acknowledged write
	lostDriven, lostRef   int           // acknowledged, then missing on the final master
	ackedDriven, ackedRef int
}

// runHAProxy measures, per kill -9 of the master: the time until the first
// write through each backend is acknowledged (by the new master: the old one
// is dead), and, once the old master came back as a master and Sentinel
// turned it into a replica, how many acknowledged writes are missing on the
// final master. Sentinel keeps its default periods here: how long the old
// master stays a master is what costs the role check its writes.
func runHAProxy(ctx context.Context, e *env, rep *Report) error {
	shard, err := e.c.StartShard(sandbox.ShardOptions{Name: "hx", Replicas: 2})
	if err != nil {
		return err
	}
	var ref []sandbox.HAProxyServer
	for _, r := range shard.Nodes() {
		ref = append(ref, sandbox.HAProxyServer{Name: r.Name(), Addr: r.Addr()})
	}
	hap, err := e.c.StartHAProxy(sandbox.HAProxyOptions{Backends: []sandbox.HAProxyBackend{
		{Name: "driven", Servers: []sandbox.HAProxyServer{{Name: "hx", Addr: shard.Master.Addr()}}, Check: true},
		{Name: "ref", Servers: ref, RoleCheck: true, Inter: 100 * time.Millisecond},
	}})
	if err != nil {
		return err
	}
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	if _, err := e.startAgent("agent-haproxy", e.c.NewIP(), map[string]any{
		"node_name": "bench-haproxy",
		"consul":    map[string]any{"ttl": "3s"},
		"sentinel":  map[string]any{"addresses": sentinels},
		"haproxy": []any{map[string]any{
			"name": "bench", "runtime_api": hap.Socket, "reconcile": "2s",
			"servers": []any{map[string]any{"backend": "driven", "server": "hx", "master_name": shard.Name}},
		}},
	}); err != nil {
		return err
	}
	var firstDriven, firstRef durations
	lostDriven, lostRef := values{unit: "writes"}, values{unit: "writes"}
	for i := range e.o.Kills {
		r, err := hxKill(ctx, e, shard, hap)
		if err != nil {
			return fmt.Errorf("kill %d: %w", i+1, err)
		}
		e.logf("haproxy kill %d: first write %s (driven) %s (role check); lost %d of %d (driven) %d of %d (role check)",
			i+1, r.firstDriven.Round(time.Millisecond), r.firstRef.Round(time.Millisecond), r.lostDriven, r.ackedDriven, r.lostRef, r.ackedRef)
		firstDriven.add(r.firstDriven)
		firstRef.add(r.firstRef)
		lostDriven.add(float64(r.lostDriven))
		lostRef.add(float64(r.lostRef))
	}
	role := lostRef.summary()
	rep.Rows = append(rep.Rows,
		judged("7", "HAProxy: kill -9 → first write on the new master, agent-driven", "≤ role check", firstDriven.summary(),
			func(s Summary) bool { return s.P50 <= firstRef.summary().P50 }),
		plain("7", "  the same through HAProxy's role check (inter 100ms fall 1 rise 1)", "", firstRef.summary()),
		judged("7", "HAProxy: acknowledged writes lost once the old master returns, agent-driven", "0", lostDriven.summary(),
			func(s Summary) bool { return s.Max == 0 }),
		plain("7", "  the same through HAProxy's role check", "", role),
	)
	rep.Notes = append(rep.Notes, "7: one HAProxy 2.6 with both backends, a client per backend writing unique keys every 1 ms on "+
		"connections it renews every ~20 ms; the old master restarts as a master (empty, no replicaof) right after the failover "+
		"and Sentinel (default periods) turns it into a replica about 10 s later. The agent-driven backend moves on the "+
		"+switch-master the agent confirms; the role check sees the promoted replica as a master before Sentinel announces it.")
	return nil
}

// hxKill is one kill -9 run on a settled shard; it leaves the shard settled.
func hxKill(ctx context.Context, e *env, shard *sandbox.Shard, hap *sandbox.HAProxy) (hxRun, error) {
	var r hxRun
	cur, err := shard.CurrentMaster(ctx)
	if err != nil {
		return r, err
	}
	var nodes []string
	for _, n := range shard.Nodes() {
		nodes = append(nodes, n.Addr())
	}
	if err := e.waitSettled(ctx, shard.Name, shard.Sentinels, nodes, cur, time.Minute); err != nil {
		return r, err
	}
	old := shard.Node(cur)
	driven, ref := startHXWriter(hap.Frontends["driven"]), startHXWriter(hap.Frontends["ref"])
	defer driven.stop()
	defer ref.stop()
	if err := sandbox.Poll(ctx, "writes through both backends", func(context.Context) error {
		if driven.count() < 100 || ref.count() < 100 {
			return fmt.Errorf("%d and %d acknowledged", driven.count(), ref.count())
		}
		return nil
	}); err != nil {
		return r, err
	}
	if err := old.Kill(); err != nil {
		return r, err
	}
	killed := time.Now()
	if r.firstDriven, err = driven.firstAfter(ctx, killed); err != nil {
		return r, fmt.Errorf("agent-driven backend: %w", err)
	}
	if r.firstRef, err = ref.firstAfter(ctx, killed); err != nil {
		return r, fmt.Errorf("role-check backend: %w", err)
	}
	if err := old.Restart(); err != nil {
		return r, err
	}
	var final string
	if err := sandbox.Poll(ctx, old.Name()+" turned into a replica", func(ctx context.Context) error {
		if final, err = shard.CurrentMaster(ctx); err != nil {
			return err
		}
		if final == old.Addr() {
			return fmt.Errorf("the Sentinels name the old master %s", final)
		}
		return e.settled(ctx, shard.Name, shard.Sentinels, nodes, final)
	}); err != nil {
		return r, err
	}
	driven.stop()
	ref.stop()
	cl := e.client(final)
	for _, w := range []struct {
		wr          *hxWriter
		lost, acked *int
	}{{driven, &r.lostDriven, &r.ackedDriven}, {ref, &r.lostRef, &r.ackedRef}} {
		keys := w.wr.keys()
		*w.acked = len(keys)
		for i := 0; i < len(keys); i += 500 {
			batch := keys[i:min(i+500, len(keys))]
			n, err := cl.Exists(ctx, batch...).Result()
			if err != nil {
				return r, fmt.Errorf("EXISTS on %s: %w", final, err)
			}
			*w.lost += len(batch) - int(n)
		}
	}
	return r, nil
}

// hxWriter writes unique keys through one frontend every millisecond on a
// connection it renews every ~20ms (a new connection is where HAProxy picks
// a server), and records the acknowledged ones.
type hxWriter struct {
	client *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	acked []string
	at    []time.Time
}

var hxWriters int

func startHXWriter(addr string) *hxWriter {
	hxWriters++
	prefix := fmt.Sprintf("hx%d", hxWriters)
	ctx, cancel := context.WithCancel(context.Background())
	w := &hxWriter{
		cancel: cancel, done: make(chan struct{}),
		client: redis.NewClient(&redis.Options{
			Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1, ConnMaxLifetime: 20 * time.Millisecond,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
		}),
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			key := fmt.Sprintf("%s:%d", prefix, i)
			if w.client.Set(ctx, key, i, 0).Err() == nil {
				w.mu.Lock()
				w.acked, w.at = append(w.acked, key), append(w.at, time.Now())
				w.mu.Unlock()
			}
		}
	}()
	return w
}

func (w *hxWriter) stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
		w.client.Close()
	})
}

func (w *hxWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *hxWriter) keys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.acked...)
}

// firstAfter waits for a write acknowledged after t and returns how long
// after t it was.
func (w *hxWriter) firstAfter(ctx context.Context, t time.Time) (time.Duration, error) {
	var d time.Duration
	err := sandbox.Poll(ctx, "a write acknowledged after the kill", func(context.Context) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, at := range w.at {
			if at.After(t) {
				d = at.Sub(t)
				return nil
			}
		}
		return fmt.Errorf("none of %d yet", len(w.at))
	})
	return d, err
}
