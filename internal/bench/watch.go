package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// switchEvent is one +switch-master as the benchmark received it.
type switchEvent struct {
	Name     string
	Old, New string // host:port
	At       time.Time
	From     string // the Sentinel that published it
}

// maxMessages bounds the pub/sub loops: far more than any run receives.
const maxMessages = 1 << 20

// switchWatch subscribes to +switch-master on every Sentinel and keeps what
// arrives. The time of a failover is the earliest receipt among the
// Sentinels: the moment the first of them published it.
type switchWatch struct {
	mu     sync.Mutex
	events []switchEvent
	wake   chan struct{}
	stop   context.CancelFunc
	wg     sync.WaitGroup
}

func watchSwitches(ctx context.Context, sentinels []*sandbox.Sentinel) (*switchWatch, error) {
	wctx, cancel := context.WithCancel(ctx)
	w := &switchWatch{wake: make(chan struct{}), stop: cancel}
	ready := make(chan error, len(sentinels))
	for _, s := range sentinels {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.follow(wctx, s.Addr(), ready)
		}()
	}
	for range sentinels {
		select {
		case err := <-ready:
			if err != nil {
				w.close()
				return nil, err
			}
		case <-time.After(10 * time.Second):
			w.close()
			return nil, errors.New("subscribe to +switch-master: no confirmation within 10s")
		}
	}
	return w, nil
}

func (w *switchWatch) follow(ctx context.Context, addr string, ready chan<- error) {
	cl := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, DialTimeout: time.Second})
	defer cl.Close()
	ps := cl.Subscribe(ctx, "+switch-master")
	defer ps.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := ps.Receive(rctx)
	cancel()
	if err != nil {
		ready <- fmt.Errorf("subscribe to +switch-master on %s: %w", addr, err)
		return
	}
	ready <- nil
	// ReceiveMessage blocks in a read that ctx does not interrupt: closing
	// the subscription does.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	for range maxMessages {
		if ctx.Err() != nil {
			return
		}
		msg, err := ps.ReceiveMessage(ctx)
		at := time.Now()
		if err != nil {
			// go-redis reconnects and subscribes again on the next call.
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		f := strings.Fields(msg.Payload) // name old-ip old-port new-ip new-port
		if len(f) != 5 {
			continue
		}
		w.mu.Lock()
		w.events = append(w.events, switchEvent{
			Name: f[0], Old: net.JoinHostPort(f[1], f[2]), New: net.JoinHostPort(f[3], f[4]), At: at, From: addr,
		})
		close(w.wake)
		w.wake = make(chan struct{})
		w.mu.Unlock()
	}
}

func (w *switchWatch) close() {
	w.stop()
	w.wg.Wait()
}

// first returns the earliest switch of name away from old received at or
// after since.
func (w *switchWatch) first(name, old string, since time.Time) (switchEvent, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var best switchEvent
	found := false
	for _, e := range w.events {
		if e.Name == name && e.Old == old && !e.At.Before(since) && (!found || e.At.Before(best.At)) {
			best, found = e, true
		}
	}
	return best, found
}

// from returns the switch of name away from old as the Sentinel at addr
// published it, at or after since.
func (w *switchWatch) from(name, old, addr string, since time.Time) (switchEvent, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.Name == name && e.Old == old && e.From == addr && !e.At.Before(since) {
			return e, true
		}
	}
	return switchEvent{}, false
}

// wait blocks until first finds an event or ctx ends.
func (w *switchWatch) wait(ctx context.Context, name, old string, since time.Time) (switchEvent, error) {
	for {
		w.mu.Lock()
		wake := w.wake
		w.mu.Unlock()
		if e, ok := w.first(name, old, since); ok {
			return e, nil
		}
		select {
		case <-ctx.Done():
			return switchEvent{}, fmt.Errorf("no +switch-master for %s away from %s: %w", name, old, ctx.Err())
		case <-wake:
		}
	}
}

// dnsAnswer is what Consul DNS answered from At on.
type dnsAnswer struct {
	At  time.Time
	IPs []string // sorted
	Err string
}

// dnsWatch keeps each change of what Consul DNS answers for one name. It
// asks DNS whenever a blocking query on the service's health returns (the
// catalog changed: DNS may answer differently now) and, as a fallback, every
// poll interval. Polling DNS every millisecond instead loads the very Consul
// being measured: it doubled its register latency in a trial here.
type dnsWatch struct {
	r    *net.Resolver
	name string

	mu      sync.Mutex
	changes []dnsAnswer
	lastAt  time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func watchDNS(ctx context.Context, client *api.Client, dnsAddr, service, name string, poll time.Duration) *dnsWatch {
	ctx, cancel := context.WithCancel(ctx)
	d := &dnsWatch{r: resolverFor(dnsAddr), name: name, cancel: cancel}
	d.query(ctx)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		var idx uint64
		for range 10000 {
			q := (&api.QueryOptions{WaitIndex: idx, WaitTime: 30 * time.Second}).WithContext(ctx)
			_, meta, err := client.Health().Service(service, "", false, q)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				sleep(ctx, 10*time.Millisecond)
				continue
			}
			if meta.LastIndex != idx {
				d.query(ctx)
			}
			if meta.LastIndex < idx {
				idx = 0
			} else {
				idx = meta.LastIndex
			}
		}
	}()
	go func() {
		defer d.wg.Done()
		for range 100000 {
			sleep(ctx, poll)
			if ctx.Err() != nil {
				return
			}
			d.query(ctx)
		}
	}()
	return d
}

// query asks DNS once and records the answer if it changed. Queries are
// serialized so that changes stay in time order.
func (d *dnsWatch) query(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	ips, err := lookupA(qctx, d.r, d.name)
	cancel()
	at := time.Now()
	if ctx.Err() != nil {
		return
	}
	a := dnsAnswer{At: at, IPs: ips}
	if err != nil {
		a.Err = err.Error()
	}
	d.lastAt = at
	if n := len(d.changes); n == 0 || !slices.Equal(d.changes[n-1].IPs, a.IPs) || d.changes[n-1].Err != a.Err {
		d.changes = append(d.changes, a)
	}
}

func (d *dnsWatch) stop() {
	d.cancel()
	d.wg.Wait()
}

// firstExactly is the first time the answer was exactly ip.
func (d *dnsWatch) firstExactly(ip string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.changes {
		if len(a.IPs) == 1 && a.IPs[0] == ip && a.Err == "" {
			return a.At, true
		}
	}
	return time.Time{}, false
}

// multiple returns how many answers held more than one address, and the
// longest time one of them stood (until the next change, or the last query).
func (d *dnsWatch) multiple() (int, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	var longest time.Duration
	for i, a := range d.changes {
		if len(a.IPs) < 2 {
			continue
		}
		n++
		end := d.lastAt
		if i+1 < len(d.changes) {
			end = d.changes[i+1].At
		}
		longest = max(longest, end.Sub(a.At))
	}
	return n, longest
}

// maxAnswered is the largest number of addresses any one answer held.
func (d *dnsWatch) maxAnswered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, a := range d.changes {
		n = max(n, len(a.IPs))
	}
	return n
}

func resolverFor(dnsAddr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dnsAddr)
	}}
}

// lookupA returns the sorted IPv4 answers; no such name is an empty answer.
func lookupA(ctx context.Context, r *net.Resolver, name string) ([]string, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	ips, err := r.LookupIP(ctx, "ip4", name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	slices.Sort(out)
	return out, nil
}

// prober dials a listener every interval and keeps the refused stretches:
// the blackout a client sees while twemproxy restarts.
type prober struct {
	addr   string
	mu     sync.Mutex
	lastOK time.Time
	down   bool
	gapsAt []gap
	probes int
	done   chan struct{}
	cancel context.CancelFunc
}

// gap is a stretch without a listener: from the last accepted dial before it
// to the first accepted dial after it (an upper bound, by one interval).
type gap struct {
	From, To  time.Time
	FirstFail time.Time
}

func (g gap) length() time.Duration { return g.To.Sub(g.From) }

func startProber(ctx context.Context, addr string, interval time.Duration, limit int) *prober {
	ctx, cancel := context.WithCancel(ctx)
	p := &prober{addr: addr, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(p.done)
		d := net.Dialer{Timeout: 50 * time.Millisecond}
		var open gap
		for range limit {
			began := time.Now()
			c, err := d.DialContext(ctx, "tcp", addr)
			at := time.Now()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.probes++
			if err == nil {
				c.Close()
				if p.down {
					open.To = at
					p.gapsAt = append(p.gapsAt, open)
					p.down = false
				}
				p.lastOK = at
			} else if !p.down {
				p.down = true
				open = gap{From: p.lastOK, FirstFail: at}
				if open.From.IsZero() {
					open.From = at
				}
			}
			p.mu.Unlock()
			// A slow dial (a loaded machine) is its own pause.
			if rest := interval - at.Sub(began); rest > 0 {
				sleep(ctx, rest)
			}
		}
	}()
	return p
}

func (p *prober) stop() {
	p.cancel()
	<-p.done
}

// gaps returns the closed refused stretches.
func (p *prober) gaps() []gap {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.gapsAt)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
