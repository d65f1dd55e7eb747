package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// hxFigures collects figures 7 and 8 over the runs.
type hxFigures struct {
	firstDriven, firstRef, firstTwem, firstDNS durations
	shareDriven, shareTwem, shareDNS           durations
	promoted, switched                         durations
	// From the agents' own logs: ROLE master → their "promotion
	// confirmed", and the twemproxy pipeline run that followed.
	detectProxy, detectNode, pipeline      durations
	lostDriven, lostRef, lostTwem, lostDNS values // old master returns
	planDriven, planRef, planTwem, planDNS values // SENTINEL FAILOVER
}

// runHAProxy runs figures 7 and 8 in one stack: Kills kill -9 runs, then
// Failovers planned failovers (at most 10; one in the short run).
func runHAProxy(ctx context.Context, e *env, rep *Report) error {
	st, err := startHX(ctx, e)
	if err != nil {
		return err
	}
	defer st.close()
	f := &hxFigures{}
	for _, v := range []*values{&f.lostDriven, &f.lostRef, &f.lostTwem, &f.lostDNS, &f.planDriven, &f.planRef, &f.planTwem, &f.planDNS} {
		v.unit = "writes"
	}
	for i := range e.o.Kills {
		if err := st.kill(ctx, f, i); err != nil {
			return fmt.Errorf("kill %d: %w", i+1, err)
		}
	}
	planned := min(e.o.Failovers, 10)
	if e.o.Short {
		planned = 1
	}
	for i := range planned {
		if err := st.planned(ctx, f, i); err != nil {
			return fmt.Errorf("planned failover %d: %w", i+1, err)
		}
	}
	f.rows(rep)
	return nil
}

// kill is one kill -9 run on a settled shard; it leaves the shard settled.
func (st *hxStack) kill(ctx context.Context, f *hxFigures, run int) error {
	e := st.e
	cur, err := st.shard.CurrentMaster(ctx)
	if err != nil {
		return err
	}
	if err := e.waitSettled(ctx, st.shard.Name, st.shard.Sentinels, st.nodes(), cur, time.Minute); err != nil {
		return err
	}
	old := st.shard.Node(cur)
	cl := st.startClients(ctx, "kill")
	defer cl.stop()
	if err := cl.writing(ctx); err != nil {
		return err
	}
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	roles := watchPromotion(pctx, e, st.nodes(), cur)
	killAt := time.Now()
	if err := old.Kill(); err != nil {
		return err
	}
	deadAt := time.Now() // reaped: no write sent from now on reaches it
	dDriven, err := firstAfter(ctx, cl.driven, killAt, deadAt)
	if err != nil {
		return fmt.Errorf("agent-driven backend: %w", err)
	}
	dRef, err := firstAfter(ctx, cl.ref, killAt, deadAt)
	if err != nil {
		return fmt.Errorf("role-check backend: %w", err)
	}
	f.firstDriven.add(dDriven)
	f.firstRef.add(dRef)
	promo, ok := roles.wait(pctx)
	if !ok {
		return fmt.Errorf("no replica of %s answered ROLE master within 30s", cur)
	}
	f.promoted.add(promo.at.Sub(killAt))
	f.shareDriven.add(killAt.Add(dDriven).Sub(promo.at))
	if sw, err := st.watch.wait(pctx, st.shard.Name, cur, killAt); err == nil {
		f.switched.add(sw.At.Sub(killAt))
	} else {
		f.switched.fail()
	}
	wt, wd, okT, okD := st.landings(ctx, cl, promo.addr, deadAt)
	f.addLandings(killAt, promo.at, wt, wd, okT, okD)
	// The old master returns at once, empty and a master, until Sentinel
	// turns it into a replica.
	if err := old.Restart(); err != nil {
		return err
	}
	final, err := st.waitFinal(ctx, cur)
	if err != nil {
		return err
	}
	f.addOwnLog(st, promo, killAt)
	l, err := st.lost(ctx, cl, final)
	if err != nil {
		return err
	}
	f.lostDriven.add(float64(l.driven))
	f.lostRef.add(float64(l.ref))
	f.lostTwem.add(float64(l.twem))
	f.lostDNS.add(float64(l.dns))
	e.logf("haproxy kill %d: ROLE master %s after the kill; first write: HAProxy driven %s, role check %s, twemproxy %s, DNS %s; "+
		"lost after the old master returned (of %d): driven %d, role check %d, twemproxy %d, DNS %d",
		run+1, promo.at.Sub(killAt).Round(time.Millisecond), last(f.firstDriven), last(f.firstRef),
		fmtDelta(wt.Done, promo.at, okT)+" after ROLE", fmtDelta(wd.Done, promo.at, okD)+" after ROLE",
		l.acked, l.driven, l.ref, l.twem, l.dns)
	return nil
}

// landings waits (15s at most) for the first twemproxy and DNS writes sent
// after deadAt that landed on master.
func (st *hxStack) landings(ctx context.Context, cl *hxClients, master string, deadAt time.Time) (wt, wd write, okT, okD bool) {
	lt := &landing{w: cl.twem, since: deadAt, master: st.e.client(master), sentAfter: true}
	ld := &landing{w: cl.dns, since: deadAt, master: st.e.client(master), sentAfter: true}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil && !(okT && okD); {
		if !okT {
			wt, okT = lt.poll(ctx)
		}
		if !okD {
			wd, okD = ld.poll(ctx)
		}
		sleep(ctx, 5*time.Millisecond)
	}
	return wt, wd, okT, okD
}

// addLandings records the kill → first write and the agent's share
// (promoted → first write) of the twemproxy and DNS clients.
func (f *hxFigures) addLandings(killAt, promoted time.Time, wt, wd write, okT, okD bool) {
	for _, p := range []struct {
		ok           bool
		w            write
		first, share *durations
	}{{okT, wt, &f.firstTwem, &f.shareTwem}, {okD, wd, &f.firstDNS, &f.shareDNS}} {
		if p.ok {
			p.first.add(p.w.Done.Sub(killAt))
			p.share.add(p.w.Done.Sub(promoted))
		} else {
			p.first.fail()
			p.share.fail()
		}
	}
}

// addOwnLog records what the agents' own logs say of the promotion.
func (f *hxFigures) addOwnLog(st *hxStack, promo promotion, since time.Time) {
	pc, nc, took, found := st.ownLog(promo.addr, since)
	for i, d := range []*durations{&f.detectProxy, &f.detectNode, &f.pipeline} {
		switch {
		case !found[i]:
			d.fail()
		case i == 2:
			d.add(took)
		default:
			d.add(max(0, []time.Time{pc, nc}[i].Sub(promo.at)))
		}
	}
}

// planned is one SENTINEL FAILOVER with the four writers running; it counts
// the acknowledged writes missing on the new master once the shard is at
// rest and every client writes there.
func (st *hxStack) planned(ctx context.Context, f *hxFigures, run int) error {
	e := st.e
	cur, err := st.shard.CurrentMaster(ctx)
	if err != nil {
		return err
	}
	if err := e.waitSettled(ctx, st.shard.Name, st.shard.Sentinels, st.nodes(), cur, time.Minute); err != nil {
		return err
	}
	cl := st.startClients(ctx, "plan")
	defer cl.stop()
	if err := cl.writing(ctx); err != nil {
		return err
	}
	at := time.Now()
	if err := e.failover(ctx, st.shard.Sentinels[run%len(st.shard.Sentinels)], st.shard.Name); err != nil {
		return err
	}
	final, err := st.waitFinal(ctx, cur)
	if err != nil {
		return err
	}
	// Every client writes on the new master before the count.
	lt := &landing{w: cl.twem, since: at, master: e.client(final)}
	ld := &landing{w: cl.dns, since: at, master: e.client(final)}
	if err := sandbox.Poll(ctx, "twemproxy and DNS writes on "+final, func(ctx context.Context) error {
		_, okT := lt.poll(ctx)
		_, okD := ld.poll(ctx)
		if !okT || !okD {
			return fmt.Errorf("twemproxy landed %v, DNS landed %v", okT, okD)
		}
		return nil
	}); err != nil {
		return err
	}
	l, err := st.lost(ctx, cl, final)
	if err != nil {
		return err
	}
	f.planDriven.add(float64(l.driven))
	f.planRef.add(float64(l.ref))
	f.planTwem.add(float64(l.twem))
	f.planDNS.add(float64(l.dns))
	e.logf("haproxy planned failover %d: %s → %s; lost (of %d acknowledged): driven %d, role check %d, twemproxy %d, DNS %d",
		run+1, cur, final, l.acked, l.driven, l.ref, l.twem, l.dns)
	return nil
}

func last(d durations) string {
	if len(d.xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fms", d.xs[len(d.xs)-1])
}

// promotion is the first replica seen answering ROLE master.
type promotion struct {
	addr string
	at   time.Time
}

// promotionWatch asks every replica ROLE every millisecond (each in its own
// goroutine) and keeps the first that answers master: the moment the
// promotion is visible, which is where the agent's share starts.
type promotionWatch struct {
	once sync.Once
	done chan struct{}
	p    promotion
}

func watchPromotion(ctx context.Context, e *env, nodes []string, master string) *promotionWatch {
	w := &promotionWatch{done: make(chan struct{})}
	for _, n := range nodes {
		if n == master {
			continue
		}
		c := e.client(n)
		go func() {
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for ctx.Err() == nil {
				select {
				case <-w.done:
					return
				case <-ctx.Done():
					return
				case <-t.C:
				}
				// The send time: the replica was a master no earlier,
				// so the agent's share is never understated.
				at := time.Now()
				qctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				v, err := c.Do(qctx, "ROLE").Slice()
				cancel()
				if err == nil && len(v) > 0 && v[0] == "master" {
					w.once.Do(func() {
						w.p = promotion{addr: n, at: at}
						close(w.done)
					})
					return
				}
			}
		}()
	}
	return w
}

func (w *promotionWatch) wait(ctx context.Context) (promotion, bool) {
	select {
	case <-w.done:
		return w.p, true
	case <-ctx.Done():
		return promotion{}, false
	}
}
