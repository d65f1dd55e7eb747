package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// active is a fault in progress: what it holds (so that two faults do not
// take down more than the stack is built to survive) and how it heals.
type active struct {
	kind  string
	holds []string
	heal  func()
	until time.Time
}

// injector tracks the faults in progress.
type injector struct {
	mu     sync.Mutex
	active map[*active]bool
	wg     sync.WaitGroup
}

func (in *injector) held(res string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for a := range in.active {
		for _, h := range a.holds {
			if h == res {
				return true
			}
		}
	}
	return false
}

func (in *injector) n() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.active)
}

// inject runs faults until the campaign's time is up, pausing every
// SettleEvery to heal everything and check convergence.
func (cp *campaign) inject(ctx context.Context) {
	in := &injector{active: map[*active]bool{}}
	cp.inj = in
	end := time.Now().Add(cp.o.Duration)
	nextSettle := time.Now().Add(cp.o.SettleEvery)
	for time.Now().Before(end) && ctx.Err() == nil {
		if time.Now().After(nextSettle) {
			cp.healAll()
			if err := cp.waitConverged(ctx, "settle"); err != nil {
				cp.violate("converge", err.Error())
			}
			nextSettle = time.Now().Add(cp.o.SettleEvery)
			continue
		}
		gap := 200*time.Millisecond + time.Duration(cp.rng.Int64N(int64(1300*time.Millisecond)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(gap):
		}
		if in.n() >= cp.o.MaxConcurrent {
			continue
		}
		kind := cp.o.Faults[cp.rng.IntN(len(cp.o.Faults))]
		a, err := cp.start(ctx, kind)
		if err != nil {
			cp.note("fault %s not injected: %v", kind, err)
			continue
		}
		if a == nil { // instant fault, nothing to heal
			continue
		}
		in.mu.Lock()
		in.active[a] = true
		in.mu.Unlock()
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(a.until)):
			}
			cp.finish(a)
		}()
	}
}

// finish heals a once.
func (cp *campaign) finish(a *active) {
	in := cp.inj
	in.mu.Lock()
	if !in.active[a] {
		in.mu.Unlock()
		return
	}
	delete(in.active, a)
	in.mu.Unlock()
	a.heal()
}

// healAll heals every fault in progress now and waits for the heals.
func (cp *campaign) healAll() {
	in := cp.inj
	if in == nil {
		return
	}
	in.mu.Lock()
	var all []*active
	for a := range in.active {
		all = append(all, a)
	}
	in.mu.Unlock()
	for _, a := range all {
		cp.finish(a)
	}
	in.wg.Wait()
	// A process a heal could not bring back (a restart that failed) is
	// started again here, so the convergence check starts from a whole stack.
	for _, p := range cp.st.c.Processes() {
		if !p.Alive() {
			cp.say("heal: %s was not running; restarting it", p.Name())
			if err := p.Restart(); err != nil {
				cp.violate("heal", fmt.Sprintf("restart %s: %v", p.Name(), err))
			}
		}
	}
}

func (cp *campaign) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(cp.rng.Int64N(int64(hi-lo)+1))
}

// start injects one fault of kind on a target that no fault in progress
// holds. It returns nil for a fault that needs no healing.
func (cp *campaign) start(ctx context.Context, kind string) (*active, error) {
	st := cp.st
	switch kind {
	case KillRedis, PauseRedis, RestartRedis:
		sh := st.shards[cp.rng.IntN(len(st.shards))]
		nodes := sh.Nodes()
		r := nodes[cp.rng.IntN(len(nodes))]
		if cp.inj.held("shard:" + sh.Name) {
			return nil, fmt.Errorf("a node of %s is already down", sh.Name)
		}
		cp.markKilled(r.Addr())
		return cp.processFault(kind, r.Process, "redis "+r.Addr()+" ("+sh.Name+")", []string{"shard:" + sh.Name})
	case KillSentinel, PauseSentinel:
		s := st.sentinels[cp.rng.IntN(len(st.sentinels))]
		if cp.inj.held("sentinel") {
			return nil, fmt.Errorf("a sentinel is already down")
		}
		k := map[string]string{KillSentinel: KillRedis, PauseSentinel: PauseRedis}[kind]
		return cp.processFaultAs(k, kind, s.Process, "sentinel "+s.Addr(), []string{"sentinel"})
	case KillAgent, PauseAgent, ReloadAgent:
		hs := st.allHosts()
		h := hs[cp.rng.IntN(len(hs))]
		if cp.inj.held("agent:" + h.name) {
			return nil, fmt.Errorf("agent of %s is already faulted", h.name)
		}
		if kind == ReloadAgent {
			cp.tally(kind)
			cp.say("fault %s: SIGHUP to the agent of %s", kind, h.name)
			return nil, h.agent.Reload()
		}
		k := map[string]string{KillAgent: KillRedis, PauseAgent: PauseRedis}[kind]
		return cp.processFaultAs(k, kind, h.agent.Process, "agent of "+h.name, []string{"agent:" + h.name})
	case KillNutcracker:
		return nil, cp.killNutcracker()
	case KillHAProxy, PauseHAProxy, RestartHAProxy:
		if cp.inj.held("haproxy") {
			return nil, fmt.Errorf("haproxy is already faulted")
		}
		k := map[string]string{KillHAProxy: KillRedis, PauseHAProxy: PauseRedis, RestartHAProxy: RestartRedis}[kind]
		return cp.processFaultAs(k, kind, st.hap.Process, "haproxy", []string{"haproxy"})
	case KillHAProxyAgent, PauseHAProxyAgent, RestartHAProxyAgent:
		h := st.edge
		if cp.inj.held("agent:" + h.name) {
			return nil, fmt.Errorf("agent of %s is already faulted", h.name)
		}
		k := map[string]string{KillHAProxyAgent: KillRedis, PauseHAProxyAgent: PauseRedis, RestartHAProxyAgent: RestartRedis}[kind]
		return cp.processFaultAs(k, kind, h.agent.Process, "agent of "+h.name, []string{"agent:" + h.name})
	case KillConsulClient:
		hs := st.allHosts()
		h := hs[cp.rng.IntN(len(hs))]
		if cp.inj.held("consul:" + h.name) {
			return nil, fmt.Errorf("consul of %s is already down", h.name)
		}
		return cp.processFaultAs(KillRedis, kind, h.consul.Process, "consul client of "+h.name, []string{"consul:" + h.name})
	case KillConsulServer:
		if cp.inj.held("consul-server") {
			return nil, fmt.Errorf("a consul server is already down")
		}
		k := cp.pickServer(ctx)
		a, err := cp.processFaultAs(KillRedis, kind, k.Process, "consul server "+k.NodeName(), []string{"consul-server"})
		if a != nil {
			cp.consulChurned()
			a.until = time.Now().Add(cp.dur(2*time.Second, 5*time.Second))
			heal := a.heal
			a.heal = func() { heal(); cp.consulChurned() }
		}
		return a, err
	case CutSentinelLinks, CutConsulLink:
		hs := st.allHosts()
		h := hs[cp.rng.IntN(len(hs))]
		if cp.inj.held("link:" + h.name) {
			return nil, fmt.Errorf("links of %s are already cut", h.name)
		}
		links := h.sentinelLinks
		what := "sentinel links"
		if kind == CutConsulLink {
			links, what = []*sandbox.Link{h.consulLink}, "consul link"
		}
		for _, l := range links {
			l.Cut(true)
		}
		cp.tally(kind)
		cp.say("fault %s: %s of the agent of %s cut", kind, what, h.name)
		return &active{kind: kind, holds: []string{"link:" + h.name}, until: time.Now().Add(cp.dur(500*time.Millisecond, 3*time.Second)),
			heal: func() {
				for _, l := range links {
					l.Cut(false)
				}
				cp.say("heal %s: %s of the agent of %s restored", kind, what, h.name)
			}}, nil
	case PlannedFailover:
		sh := st.shards[cp.rng.IntN(len(st.shards))]
		if cp.inj.held("shard:" + sh.Name) {
			return nil, fmt.Errorf("a node of %s is down", sh.Name)
		}
		s := st.sentinels[cp.rng.IntN(len(st.sentinels))]
		if !s.Alive() {
			return nil, fmt.Errorf("sentinel %s is down", s.Addr())
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := sandbox.Do(cctx, s.Addr(), "SENTINEL", "FAILOVER", sh.Name); err != nil {
			return nil, fmt.Errorf("SENTINEL FAILOVER %s: %w", sh.Name, err)
		}
		cp.tally(kind)
		cp.say("fault %s: SENTINEL FAILOVER %s via %s", kind, sh.Name, s.Addr())
		// The shard is held while the failover runs, so no kill lands in it.
		return &active{kind: kind, holds: []string{"shard:" + sh.Name}, until: time.Now().Add(4 * time.Second), heal: func() {}}, nil
	case DiskFull:
		return cp.fillDisk()
	}
	return nil, fmt.Errorf("unknown fault %q", kind)
}

func (cp *campaign) tally(kind string) {
	cp.mu.Lock()
	cp.faults[kind]++
	cp.mu.Unlock()
}

// processFault kills (kind KillRedis), freezes (PauseRedis) or restarts
// (RestartRedis) p; a killed or frozen process is brought back when the
// fault heals.
func (cp *campaign) processFault(kind string, p *sandbox.Process, what string, holds []string) (*active, error) {
	return cp.processFaultAs(kind, kind, p, what, holds)
}

// processFaultAs is processFault reported as the fault label.
func (cp *campaign) processFaultAs(kind, label string, p *sandbox.Process, what string, holds []string) (*active, error) {
	if !p.Alive() {
		return nil, fmt.Errorf("%s is not running", what)
	}
	switch kind {
	case RestartRedis:
		cp.tally(label)
		cp.say("fault %s: restart %s", label, what)
		go func() {
			if err := p.Restart(); err != nil {
				cp.say("restart %s: %v", what, err)
			}
		}()
		return &active{kind: label, holds: holds, until: time.Now().Add(3 * time.Second), heal: func() {}}, nil
	case PauseRedis:
		if err := p.Pause(); err != nil {
			return nil, err
		}
		cp.tally(label)
		cp.say("fault %s: SIGSTOP %s", label, what)
		return &active{kind: label, holds: holds, until: time.Now().Add(cp.dur(300*time.Millisecond, 3*time.Second)), heal: func() {
			if err := p.Resume(); err != nil {
				cp.say("SIGCONT %s: %v", what, err)
			}
			cp.say("heal: SIGCONT %s", what)
		}}, nil
	default:
		if err := p.Kill(); err != nil {
			return nil, err
		}
		cp.tally(label)
		cp.say("fault %s: kill -9 %s", label, what)
		return &active{kind: label, holds: holds, until: time.Now().Add(cp.dur(time.Second, 4*time.Second)), heal: func() {
			if err := p.Restart(); err != nil {
				cp.say("restart %s: %v", what, err)
				return
			}
			cp.say("heal: %s restarted", what)
		}}, nil
	}
}

// markKilled records that the Redis at addr may lose what it acknowledged
// last: a write it took just before is excused from the loss check.
func (cp *campaign) markKilled(addr string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.kills[addr] = append(cp.kills[addr], time.Now())
}

// consulChurned records that a Consul server was killed or restarted just
// now (see consulChurnWindow).
func (cp *campaign) consulChurned() {
	cp.mu.Lock()
	cp.churnedAt = time.Now()
	cp.mu.Unlock()
}

// pickServer is the Raft leader half of the time, any server otherwise.
func (cp *campaign) pickServer(ctx context.Context) *sandbox.Consul {
	servers := cp.st.servers
	if cp.rng.IntN(2) == 0 {
		for _, k := range servers {
			if !k.Alive() {
				continue
			}
			cl, err := k.Client()
			if err != nil {
				continue
			}
			leader, err := cl.Status().Leader()
			if err != nil {
				continue
			}
			for _, s := range servers {
				if strings.HasPrefix(leader, s.IP()+":") {
					return s
				}
			}
		}
	}
	return servers[cp.rng.IntN(len(servers))]
}

// killNutcracker SIGKILLs the nutcracker the proxy host's agent supervises
// (found through the agent's /v1/status); the agent must restart it.
func (cp *campaign) killNutcracker() error {
	pid, err := cp.nutcrackerPID()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill nutcracker %d: %w", pid, err)
	}
	cp.tally(KillNutcracker)
	cp.say("fault %s: kill -9 nutcracker (pid %d)", KillNutcracker, pid)
	return nil
}

// nutcrackerPID finds the supervised nutcracker by its config path in
// /proc, so that only the campaign's own child is ever signalled.
func (cp *campaign) nutcrackerPID() (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "nutcracker" && strings.Contains(string(b), cp.st.proxyConf) && !strings.Contains(string(b), "--test-conf") {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no supervised nutcracker running")
}
