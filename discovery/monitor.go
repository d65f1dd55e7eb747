package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// MonitorOptions configure a Monitor. Zero timings take the defaults.
type MonitorOptions struct {
	// Addresses are the Sentinels to watch (host:port).
	Addresses []string
	// Discover, if set, returns more Sentinels (see ConsulSentinels); it is
	// called at start and every DiscoverInterval (default 10s). The known
	// Sentinels are Addresses plus the last successful discovery.
	Discover         func(ctx context.Context) ([]string, error)
	DiscoverInterval time.Duration

	// Username, Password and TLSConfig are for the Sentinels.
	Username  string
	Password  string
	TLSConfig *tls.Config
	// RedisUsername, RedisPassword and RedisTLSConfig are for the Redis
	// servers, which the Monitor asks for ROLE to confirm a +switch-master.
	RedisUsername  string
	RedisPassword  string
	RedisTLSConfig *tls.Config

	// QueryTimeout bounds every Sentinel query and ROLE check (default
	// 300ms): a Sentinel that cannot answer that fast is left out of the
	// count rather than allowed to delay the truth.
	QueryTimeout time.Duration
	// ResyncInterval is how often every Sentinel is polled (default 1s).
	ResyncInterval time.Duration
	// PingInterval is how often an idle subscription is pinged; a link that
	// stays silent for three intervals is reconnected (default 1s). This is
	// what notices a Sentinel that hangs (SIGSTOP, a dead host) rather than
	// closing the connection.
	PingInterval time.Duration
	// ConfirmWindow is how long the Monitor keeps asking the node named by
	// a +switch-master for its ROLE before ignoring the event (default 2s).
	ConfirmWindow time.Duration
	// SwitchHold is how long a confirmed +switch-master may stand against a
	// majority that still names the old master (default 1m). Sentinels
	// normally catch up within seconds.
	SwitchHold time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay of a Sentinel
	// link (default 100ms and 5s).
	BackoffMin, BackoffMax time.Duration

	// Logger is used as is: pass the agent's logger.Named(telemetry.LogSentinel).
	// Metrics and Journal are shared by the whole agent: nil Metrics means
	// private ones, a nil Journal records nothing.
	Logger  hclog.Logger
	Metrics *telemetry.Metrics
	Journal *telemetry.Journal
}

func (o *MonitorOptions) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.DiscoverInterval, 10*time.Second)
	def(&o.QueryTimeout, 300*time.Millisecond)
	def(&o.ResyncInterval, time.Second)
	def(&o.PingInterval, time.Second)
	def(&o.ConfirmWindow, 2*time.Second)
	def(&o.SwitchHold, time.Minute)
	def(&o.BackoffMin, 100*time.Millisecond)
	def(&o.BackoffMax, 5*time.Second)
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.Discard()
	}
}

// SentinelStatus is one Sentinel as the Monitor sees it, for the status API.
type SentinelStatus struct {
	Addr      string            `json:"addr"`
	ID        string            `json:"id,omitempty"` // SENTINEL MYID: one Sentinel known by two addresses counts once
	LinkUp    bool              `json:"link_up"`      // the pub/sub subscription is established
	Reachable bool              `json:"reachable"`    // it answered the last poll
	LastError string            `json:"last_error,omitempty"`
	LastPoll  time.Time         `json:"last_poll,omitzero"`
	View      map[string]string `json:"view"` // master name → address it reports
}

// Monitor holds the Sentinel truth for every master name the known
// Sentinels monitor. One Monitor serves the role logic and the twemproxy
// pipeline of an agent. Its Run loop is the only writer of the truth;
// readers take snapshots (Masters, Status) and wait on Subscribe.
type Monitor struct {
	opts MonitorOptions
	log  hclog.Logger

	// Channels into the Run loop.
	events     chan sentinelMsg
	links      chan linkChange
	polls      chan pollResult
	confirms   chan confirmResult
	discovered chan []string

	// Published state.
	mu       sync.RWMutex
	masters  map[string]Master
	statuses map[string]SentinelStatus

	subMu   sync.Mutex
	subs    map[int]chan struct{}
	nextSub int

	// Owned by the Run loop.
	wg          sync.WaitGroup
	sentinels   map[string]*sentinel // by normalized address
	discoveredA []string
	truth       map[string]*truthState
	pending     map[string]pendingSwitch // by master name: the newest +switch-master whose ROLE is being confirmed
	switched    map[string]time.Time     // by master name: arrival of the newest +switch-master applied
	recent      map[string]time.Time
	polling     bool
	pollAgain   bool
	discovering bool
}

// sentinel is one known Sentinel: a query client and a subscription link.
type sentinel struct {
	addr   string
	client *redis.Client
	stop   context.CancelFunc
	status SentinelStatus
	names  *namesCache
}

// namesCache holds the master names and ID a Sentinel last reported, so
// that most polls skip SENTINEL MASTERS (a reply of ~40 fields per master,
// parsed for every Sentinel every second otherwise) and ask only
// get-master-addr-by-name, which is all the truth needs. It is read again
// every namesMaxAge, after any error, and after the link comes back.
type namesCache struct {
	mu    sync.Mutex
	names []string
	id    string
	at    time.Time
}

// namesMaxAge is how long a Sentinel's list of master names is trusted: a
// master added with SENTINEL MONITOR is seen within it.
const namesMaxAge = 10 * time.Second

func (n *namesCache) get() (names []string, id string, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.at.IsZero() || time.Since(n.at) > namesMaxAge {
		return nil, "", false
	}
	return n.names, n.id, true
}

func (n *namesCache) set(names []string, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names, n.id, n.at = names, id, time.Now()
}

func (n *namesCache) reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names, n.id, n.at = nil, "", time.Time{}
}

type sentinelMsg struct {
	from    string
	channel string
	payload string
	at      time.Time
}

type linkChange struct {
	addr string
	up   bool
	err  error
}

type sentinelView struct {
	addr    string
	id      string // SENTINEL MYID, "" if unknown
	err     error
	masters map[string]string // name → address (get-master-addr-by-name)
}

type pollResult struct {
	at    time.Time
	views []sentinelView
}

type pendingSwitch struct {
	addr string
	at   time.Time
}

type confirmResult struct {
	name, old, addr string
	at              time.Time
	err             error // nil: the node says it is a master
}

// NewMonitor checks the options and returns a Monitor; Run starts it.
func NewMonitor(o MonitorOptions) (*Monitor, error) {
	if len(o.Addresses) == 0 && o.Discover == nil {
		return nil, errors.New("sentinel monitor: no sentinel addresses and no discovery")
	}
	for _, a := range o.Addresses {
		if _, _, err := splitPort(a); err != nil {
			return nil, fmt.Errorf("sentinel monitor: %w", err)
		}
	}
	o.setDefaults()
	return &Monitor{
		opts:       o,
		log:        o.Logger,
		events:     make(chan sentinelMsg, 256),
		links:      make(chan linkChange, 16),
		polls:      make(chan pollResult, 1),
		confirms:   make(chan confirmResult, 16),
		discovered: make(chan []string, 1),
		masters:    make(map[string]Master),
		statuses:   make(map[string]SentinelStatus),
		subs:       make(map[int]chan struct{}),
		sentinels:  make(map[string]*sentinel),
		truth:      make(map[string]*truthState),
		pending:    make(map[string]pendingSwitch),
		switched:   make(map[string]time.Time),
		recent:     make(map[string]time.Time),
	}, nil
}

// Masters returns a copy of the current truth by master name. A name is
// absent until it has been learnt; check Master.Known before acting.
func (m *Monitor) Masters() map[string]Master {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return maps.Clone(m.masters)
}

// Status returns every known Sentinel, sorted by address.
func (m *Monitor) Status() []SentinelStatus {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]SentinelStatus, 0, len(m.statuses))
	for _, s := range m.statuses {
		s.View = maps.Clone(s.View)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// Subscribe returns a channel that receives a value after every change of
// the truth (an address, or a name becoming stale or fresh again), and a
// function to unsubscribe. Notifications coalesce: the channel holds at most
// one, so a slow reader sees one wake-up for a burst and reads Masters.
func (m *Monitor) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.subMu.Lock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = ch
	m.subMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			m.subMu.Lock()
			delete(m.subs, id)
			m.subMu.Unlock()
		})
	}
}

func (m *Monitor) notify() {
	m.subMu.Lock()
	defer m.subMu.Unlock()
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run watches the Sentinels until ctx is done, then closes every
// connection and returns nil.
func (m *Monitor) Run(ctx context.Context) error {
	defer m.shutdown()
	m.setSentinels(ctx, nil)
	m.discover(ctx)
	m.requestPoll(ctx)

	resync := time.NewTicker(m.opts.ResyncInterval)
	defer resync.Stop()
	var discoverC <-chan time.Time
	if m.opts.Discover != nil {
		t := time.NewTicker(m.opts.DiscoverInterval)
		defer t.Stop()
		discoverC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-m.events:
			m.handleMessage(ctx, msg)
		case lc := <-m.links:
			m.handleLink(ctx, lc)
		case res := <-m.polls:
			m.polling = false
			m.applyPoll(res)
			if m.pollAgain {
				m.requestPoll(ctx)
			}
		case c := <-m.confirms:
			m.applyConfirm(ctx, c)
		case addrs := <-m.discovered:
			m.discovering = false
			if addrs != nil {
				m.setSentinels(ctx, addrs)
			}
		case <-resync.C:
			m.requestPoll(ctx)
		case <-discoverC:
			m.discover(ctx)
		}
	}
}

// shutdown stops every goroutine and closes the clients.
func (m *Monitor) shutdown() {
	for _, s := range m.sentinels {
		s.stop()
	}
	m.wg.Wait()
	for _, s := range m.sentinels {
		_ = s.client.Close()
	}
}

// goSend runs f in a tracked goroutine.
func (m *Monitor) goSend(f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

// setSentinels makes the known set Addresses ∪ discovered, starting and
// stopping links as needed.
func (m *Monitor) setSentinels(ctx context.Context, discovered []string) {
	if discovered != nil {
		m.discoveredA = discovered
	}
	want := make(map[string]string)
	for _, a := range append(slices.Clone(m.opts.Addresses), m.discoveredA...) {
		if _, ok := want[normalizeAddr(a)]; !ok {
			want[normalizeAddr(a)] = a
		}
	}
	changed := false
	for k, s := range m.sentinels {
		if _, ok := want[k]; !ok {
			m.log.Info("sentinel no longer known", "sentinel", s.addr)
			s.stop()
			_ = s.client.Close()
			delete(m.sentinels, k)
			m.opts.Metrics.SentinelUp.DeleteLabelValues(s.addr)
			changed = true
		}
	}
	for k, a := range want {
		if _, ok := m.sentinels[k]; ok {
			continue
		}
		lctx, stop := context.WithCancel(ctx)
		s := &sentinel{
			addr:   a,
			client: redis.NewClient(failFast(a, m.opts.Username, m.opts.Password, m.opts.TLSConfig, m.opts.QueryTimeout, 2)),
			stop:   stop,
			status: SentinelStatus{Addr: a},
			names:  &namesCache{},
		}
		m.sentinels[k] = s
		m.opts.Metrics.SentinelUp.WithLabelValues(a).Set(0)
		m.log.Info("watching sentinel", "sentinel", a)
		m.goSend(func() { m.runLink(lctx, s.addr, s.client) })
		changed = true
	}
	if changed {
		m.publishStatuses()
		m.requestPoll(ctx)
	}
}

// discover starts one discovery call if none is running.
func (m *Monitor) discover(ctx context.Context) {
	if m.opts.Discover == nil || m.discovering {
		return
	}
	m.discovering = true
	m.goSend(func() {
		dctx, cancel := context.WithTimeout(ctx, max(5*m.opts.QueryTimeout, 2*time.Second))
		defer cancel()
		addrs, err := m.opts.Discover(dctx)
		if err != nil {
			m.log.Warn("sentinel discovery failed; keeping the known sentinels", "error", err)
			addrs = nil
		} else if addrs == nil {
			addrs = []string{}
		}
		select {
		case m.discovered <- addrs:
		case <-ctx.Done():
		}
	})
}

// runLink keeps a subscription to one Sentinel's channels, reconnecting with
// capped exponential backoff and jitter.
func (m *Monitor) runLink(ctx context.Context, addr string, client *redis.Client) {
	bo := backoff{min: m.opts.BackoffMin, max: m.opts.BackoffMax}
	for {
		up, err := m.subscribe(ctx, addr, client)
		if ctx.Err() != nil {
			return
		}
		if up {
			bo.reset()
		}
		select {
		case m.links <- linkChange{addr: addr, up: false, err: err}:
		case <-ctx.Done():
			return
		}
		t := time.NewTimer(bo.next())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// subscribe runs one subscription until it fails; up reports whether it was
// established.
func (m *Monitor) subscribe(ctx context.Context, addr string, client *redis.Client) (up bool, err error) {
	ps := client.Subscribe(ctx)
	defer ps.Close()
	// A blocked receive does not watch ctx: closing the PubSub unblocks it.
	defer context.AfterFunc(ctx, func() { _ = ps.Close() })()
	sctx, cancel := context.WithTimeout(ctx, m.opts.QueryTimeout)
	err = ps.Subscribe(sctx, Channels...)
	cancel()
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	// Redis executes SUBSCRIBE for every channel before it sends the first
	// confirmation: one is enough.
	for !up {
		msg, err := ps.ReceiveTimeout(ctx, m.opts.QueryTimeout*3)
		if err != nil {
			return false, fmt.Errorf("subscribe: %w", err)
		}
		_, up = msg.(*redis.Subscription)
	}
	select {
	case m.links <- linkChange{addr: addr, up: true}:
	case <-ctx.Done():
		return true, nil
	}
	last := time.Now()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, m.opts.PingInterval)
		if ctx.Err() != nil {
			return true, nil
		}
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return true, err
			}
			if time.Since(last) > 3*m.opts.PingInterval {
				return true, fmt.Errorf("no answer for %s", time.Since(last).Round(time.Millisecond))
			}
			if !pinged {
				if err := ps.Ping(ctx); err != nil {
					return true, err
				}
				pinged = true
			}
			continue
		}
		last, pinged = time.Now(), false
		if msg, ok := msg.(*redis.Message); ok {
			m.opts.Metrics.SentinelEvents.WithLabelValues(msg.Channel).Inc()
			select {
			case m.events <- sentinelMsg{from: addr, channel: msg.Channel, payload: msg.Payload, at: last}:
			case <-ctx.Done():
				return true, nil
			}
		}
	}
}

// handleLink records a link going up or down; a link coming up triggers a
// poll so that nothing published while it was down is missed.
func (m *Monitor) handleLink(ctx context.Context, lc linkChange) {
	s := m.sentinels[normalizeAddr(lc.addr)]
	if s == nil {
		return
	}
	was := s.status.LinkUp
	s.status.LinkUp = lc.up
	if lc.up {
		m.opts.Metrics.SentinelUp.WithLabelValues(s.addr).Set(1)
		m.log.Info("sentinel link up", "sentinel", s.addr)
		s.names.reset() // it may have restarted with other masters
		m.requestPoll(ctx)
	} else {
		m.opts.Metrics.SentinelUp.WithLabelValues(s.addr).Set(0)
		if lc.err != nil {
			s.status.LastError = lc.err.Error()
		}
		if was {
			m.log.Warn("sentinel link down", "sentinel", s.addr, "error", lc.err)
			m.opts.Journal.Add(telemetry.Event{
				Kind: telemetry.KindSentinel, Type: "link-down", Subject: s.addr,
				Detail: errString(lc.err), Level: "warn",
			})
		} else {
			m.log.Debug("sentinel link still down", "sentinel", s.addr, "error", lc.err)
		}
	}
	m.publishStatuses()
}

// requestPoll starts a poll of every Sentinel, or asks for another one
// after the running poll.
func (m *Monitor) requestPoll(ctx context.Context) {
	if m.polling {
		m.pollAgain = true
		return
	}
	m.polling, m.pollAgain = true, false
	targets := make([]*sentinel, 0, len(m.sentinels))
	for _, s := range m.sentinels {
		targets = append(targets, s)
	}
	m.goSend(func() {
		res := pollResult{views: make([]sentinelView, len(targets))}
		var wg sync.WaitGroup
		for i, s := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res.views[i] = m.pollOne(ctx, s.addr, s.client, s.names)
			}()
		}
		wg.Wait()
		res.at = time.Now()
		select {
		case m.polls <- res:
		case <-ctx.Done():
		}
	})
}

// pollOne reads one Sentinel's view: the master names (SENTINEL MASTERS,
// cached for namesMaxAge), then get-master-addr-by-name for each (which,
// unlike MASTERS, already names the promoted replica during the last phase
// of a failover).
func (m *Monitor) pollOne(ctx context.Context, addr string, c *redis.Client, cache *namesCache) sentinelView {
	v := sentinelView{addr: addr}
	qctx, cancel := context.WithTimeout(ctx, m.opts.QueryTimeout)
	defer cancel()
	names, id, cached := cache.get()
	if !cached {
		first := c.Pipeline()
		mastersCmd := first.Do(qctx, "sentinel", "masters")
		idCmd := first.Do(qctx, "sentinel", "myid")
		_, _ = first.Exec(qctx)
		infos, err := parseMasters(mastersCmd)
		if err != nil {
			cache.reset()
			v.err = err
			return v
		}
		// Sentinel 6.2+ knows its ID; older ones are told apart by address.
		id, _ = idCmd.Text()
		names = slices.Sorted(maps.Keys(infos))
		cache.set(names, id)
	}
	v.id = id
	v.masters = make(map[string]string, len(names))
	if len(names) == 0 {
		return v
	}
	pipe := c.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(names))
	for i, n := range names {
		cmds[i] = redis.NewStringSliceCmd(qctx, "sentinel", "get-master-addr-by-name", n)
		_ = pipe.Process(qctx, cmds[i])
	}
	if _, err := pipe.Exec(qctx); err != nil && !errors.Is(err, redis.Nil) {
		cache.reset()
		v.err = fmt.Errorf("sentinel get-master-addr-by-name: %w", err)
		v.masters = nil
		return v
	}
	for i, n := range names {
		hp, err := cmds[i].Result()
		if err != nil || len(hp) != 2 {
			// Unknown to this Sentinel now (SENTINEL REMOVE): read the
			// names again next time.
			cache.reset()
			continue
		}
		if a, err := joinAddr(hp[0], hp[1]); err == nil {
			v.masters[n] = a
		}
	}
	return v
}

// masterInfo is the part of a SENTINEL MASTERS entry the agent uses.
type masterInfo struct {
	Addr  string
	Flags []string
}

// sentinelMasters runs SENTINEL MASTERS and returns the masters by name.
func sentinelMasters(ctx context.Context, c *redis.Client) (map[string]masterInfo, error) {
	return parseMasters(c.Do(ctx, "sentinel", "masters"))
}

// parseMasters parses the reply of SENTINEL MASTERS.
func parseMasters(cmd *redis.Cmd) (map[string]masterInfo, error) {
	v, err := cmd.Slice()
	if err != nil {
		return nil, fmt.Errorf("sentinel masters: %w", err)
	}
	out := make(map[string]masterInfo, len(v))
	for _, e := range v {
		kv := fieldMap(e)
		name := kv["name"]
		if name == "" {
			continue
		}
		mi := masterInfo{Flags: strings.Split(kv["flags"], ",")}
		if a, err := joinAddr(kv["ip"], kv["port"]); err == nil {
			mi.Addr = a
		}
		out[name] = mi
	}
	return out, nil
}

// fieldMap turns a RESP2 flat key/value array (or a RESP3 map) into a map.
func fieldMap(v any) map[string]string {
	out := map[string]string{}
	switch t := v.(type) {
	case []any:
		for i := 0; i+1 < len(t); i += 2 {
			k, _ := t[i].(string)
			val, _ := t[i+1].(string)
			out[k] = val
		}
	case map[any]any:
		for k, val := range t {
			ks, _ := k.(string)
			vs, _ := val.(string)
			out[ks] = vs
		}
	}
	return out
}

// applyPoll stores the views and recomputes the truth of every name.
func (m *Monitor) applyPoll(res pollResult) {
	names := map[string]bool{}
	for n := range m.truth {
		names[n] = true
	}
	for _, v := range res.views {
		s := m.sentinels[normalizeAddr(v.addr)]
		if s == nil {
			continue // no longer known
		}
		s.status.LastPoll = res.at
		s.status.Reachable = v.err == nil
		if v.err != nil {
			s.status.LastError = v.err.Error()
			s.status.View = nil
			continue
		}
		s.status.View = v.masters
		if v.id != "" {
			s.status.ID = v.id
		}
		for n := range v.masters {
			names[n] = true
		}
	}
	m.publishStatuses()
	for n := range names {
		reports, total := m.votes(n)
		ts := m.truth[n]
		if ts == nil {
			ts = &truthState{}
			m.truth[n] = ts
		}
		// A name that a majority of reachable Sentinels no longer lists
		// was removed (SENTINEL REMOVE): forget it.
		if slices.IndexFunc(reports, func(r string) bool { return r != "" }) < 0 && 2*len(reports) > total {
			if _, ok := m.masters[n]; ok {
				m.log.Info("master no longer monitored by any sentinel", "master_name", n)
			}
			delete(m.truth, n)
			m.publish(n, Master{}, false, res.at)
			continue
		}
		mst, ok := ts.eval(n, reports, total, res.at, m.opts.SwitchHold)
		m.publish(n, mst, ok, res.at)
	}
}

// votes returns one report per reachable Sentinel for name (its address,
// or "" if it does not monitor name) and the number of known Sentinels.
// Sentinels are told apart by their ID (SENTINEL MYID) once they answered,
// so one Sentinel known under two addresses (a hostname in the config, an
// IP in Consul) counts once; one never reached counts by its address.
func (m *Monitor) votes(name string) (reports []string, total int) {
	keys := make([]string, 0, len(m.sentinels))
	for k := range m.sentinels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		s := m.sentinels[k]
		id := "addr:" + k
		if s.status.ID != "" {
			id = "id:" + s.status.ID
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		total++
		if s.status.Reachable {
			reports = append(reports, s.status.View[name])
		}
	}
	return reports, total
}

// publish makes mst the truth for name; on a change of address or of
// staleness it records it and notifies subscribers.
func (m *Monitor) publish(name string, mst Master, ok bool, at time.Time) {
	m.mu.Lock()
	prev, had := m.masters[name]
	if ok {
		m.masters[name] = mst
	} else {
		delete(m.masters, name)
	}
	m.mu.Unlock()
	if !ok {
		if had {
			m.notify()
		}
		return
	}
	switch {
	case !had || !sameAddr(prev.Addr, mst.Addr):
		if had {
			m.opts.Metrics.Failovers.WithLabelValues(name).Inc()
			m.opts.Journal.Failover(name, prev.Addr, mst.Addr, mst.Since)
			m.log.Info("master changed", "master_name", name, "from", prev.Addr, "to", mst.Addr, "source", mst.Source)
		} else {
			m.log.Info("master learnt", "master_name", name, "addr", mst.Addr, "source", mst.Source)
		}
		m.opts.Journal.Add(telemetry.Event{
			Time: at, Kind: telemetry.KindTruth, Type: "master", Subject: name,
			Detail: fmt.Sprintf("%s → %s (%s, %d/%d sentinels agree)", orDash(prev.Addr), mst.Addr, mst.Source, mst.Agree, mst.Total),
		})
	case prev.Known() && !mst.Known():
		m.log.Warn("sentinel truth is stale: no majority and no fresh event", "master_name", name,
			"last_addr", mst.Addr, "reporting", mst.Reporting, "total", mst.Total)
		m.opts.Journal.Add(telemetry.Event{
			Time: at, Kind: telemetry.KindTruth, Type: "stale", Subject: name, Level: "warn",
			Detail: fmt.Sprintf("no sentinel majority (%d/%d reporting); keeping %s", mst.Reporting, mst.Total, mst.Addr),
		})
	case !prev.Known() && mst.Known():
		m.log.Info("sentinel truth is fresh again", "master_name", name, "addr", mst.Addr, "source", mst.Source)
		m.opts.Journal.Add(telemetry.Event{
			Time: at, Kind: telemetry.KindTruth, Type: "fresh", Subject: name,
			Detail: fmt.Sprintf("%s (%s, %d/%d sentinels agree)", mst.Addr, mst.Source, mst.Agree, mst.Total),
		})
	default:
		return
	}
	m.notify()
}

func (m *Monitor) publishStatuses() {
	st := make(map[string]SentinelStatus, len(m.sentinels))
	for k, s := range m.sentinels {
		st[k] = s.status
	}
	m.mu.Lock()
	m.statuses = st
	m.mu.Unlock()
}

// handleMessage acts on one pub/sub message: a +switch-master starts a
// ROLE confirmation at once; events that suggest the truth moved trigger a
// poll; every distinct event goes to the journal once.
func (m *Monitor) handleMessage(ctx context.Context, msg sentinelMsg) {
	e, err := ParseEvent(msg.channel, msg.payload)
	if err != nil {
		m.log.Warn("ignoring sentinel message", "sentinel", msg.from, "error", err)
		return
	}
	fresh := m.firstSeen(e, msg.at)
	if fresh {
		m.log.Debug("sentinel event", "sentinel", msg.from, "event", e.String())
		m.opts.Journal.Add(telemetry.Event{
			Time: msg.at, Kind: telemetry.KindSentinel, Type: e.Type, Subject: e.MasterName,
			Detail: e.Payload() + " (from " + msg.from + ")",
		})
	}
	switch e.Type {
	case "+switch-master":
		m.handleSwitch(ctx, e, msg)
	case "+convert-to-slave", "+role-change", "-sdown", "-odown", "+failover-end",
		"+failover-end-for-timeout", "+config-update-from", "+reset-master", "+monitor", "-monitor":
		if fresh {
			m.requestPoll(ctx)
		}
	}
}

// firstSeen drops the copies of one event that every Sentinel publishes:
// the same channel and payload within two seconds count once.
func (m *Monitor) firstSeen(e Event, at time.Time) bool {
	const window = 2 * time.Second
	for k, t := range m.recent {
		if at.Sub(t) > window {
			delete(m.recent, k)
		}
	}
	k := e.String()
	if _, ok := m.recent[k]; ok {
		return false
	}
	m.recent[k] = at
	return true
}

// handleSwitch starts confirming a +switch-master unless it says nothing
// new: the truth, a pending override or a running confirmation already name
// that address (the same switch seen from another Sentinel).
func (m *Monitor) handleSwitch(ctx context.Context, e Event, msg sentinelMsg) {
	name, addr := e.MasterName, e.MasterAddr
	if p, ok := m.pending[name]; ok && sameAddr(p.addr, addr) {
		return
	}
	if ts := m.truth[name]; ts != nil {
		if sameAddr(ts.override, addr) || (ts.override == "" && ts.cur.Known() && sameAddr(ts.cur.Addr, addr)) {
			return
		}
	}
	m.log.Info("+switch-master", "master_name", name, "from", e.OldMasterAddr, "to", addr, "sentinel", msg.from)
	m.pending[name] = pendingSwitch{addr: addr, at: msg.at}
	m.goSend(func() {
		err := m.confirmMaster(ctx, addr, msg.at.Add(m.opts.ConfirmWindow))
		select {
		case m.confirms <- confirmResult{name: name, old: e.OldMasterAddr, addr: addr, at: msg.at, err: err}:
		case <-ctx.Done():
		}
	})
}

// confirmMaster asks addr for ROLE until it says master or deadline passes.
func (m *Monitor) confirmMaster(ctx context.Context, addr string, deadline time.Time) error {
	c := redis.NewClient(failFast(addr, m.opts.RedisUsername, m.opts.RedisPassword, m.opts.RedisTLSConfig, m.opts.QueryTimeout, 1))
	defer c.Close()
	bo := backoff{min: 20 * time.Millisecond, max: 200 * time.Millisecond}
	for {
		qctx, cancel := context.WithTimeout(ctx, m.opts.QueryTimeout)
		role, err := readRole(qctx, c)
		cancel()
		if err == nil && role.Role == RoleMaster {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("ROLE says %s", role.Role)
		}
		wait := bo.next()
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// applyConfirm applies a confirmed +switch-master at once, or reports why
// it was ignored (the majority decides then).
func (m *Monitor) applyConfirm(ctx context.Context, c confirmResult) {
	p, ok := m.pending[c.name]
	if ok && sameAddr(p.addr, c.addr) {
		delete(m.pending, c.name)
	}
	// Confirmations can finish out of order: a switch older than one
	// already applied, or than one still being confirmed, is history.
	if c.at.Before(m.switched[c.name]) || (ok && c.at.Before(p.at)) {
		return
	}
	if c.err != nil {
		m.log.Warn("ignoring +switch-master: the new master does not confirm", "master_name", c.name, "addr", c.addr, "error", c.err)
		m.opts.Journal.Add(telemetry.Event{
			Kind: telemetry.KindTruth, Type: "switch-unconfirmed", Subject: c.name, Level: "warn",
			Detail: fmt.Sprintf("%s did not confirm it is a master: %v", c.addr, c.err),
		})
		return
	}
	ts := m.truth[c.name]
	if ts == nil {
		ts = &truthState{}
		m.truth[c.name] = ts
	}
	ts.switchTo(c.old, c.addr, c.at)
	m.switched[c.name] = c.at
	reports, total := m.votes(c.name)
	mst, ok := ts.eval(c.name, reports, total, time.Now(), m.opts.SwitchHold)
	m.publish(c.name, mst, ok, c.at)
	m.requestPoll(ctx)
}

// roleInfo is the parsed reply of ROLE.
type roleInfo struct {
	Role       string // master, replica, sentinel
	Offset     int64
	MasterAddr string // replica: the master it follows
	LinkState  string // replica: connect, connecting, sync, connected
	Replicas   int    // master: connected replicas
}

// readRole runs ROLE and parses it.
func readRole(ctx context.Context, c *redis.Client) (roleInfo, error) {
	v, err := c.Do(ctx, "role").Slice()
	if err != nil {
		return roleInfo{}, fmt.Errorf("ROLE: %w", err)
	}
	return parseRole(v)
}

// parseRole parses a ROLE reply.
func parseRole(v []any) (roleInfo, error) {
	if len(v) == 0 {
		return roleInfo{}, errors.New("ROLE: empty reply")
	}
	kind, _ := v[0].(string)
	var r roleInfo
	switch kind {
	case "master":
		r.Role = RoleMaster
		if len(v) >= 2 {
			r.Offset, _ = v[1].(int64)
		}
		if len(v) >= 3 {
			if reps, ok := v[2].([]any); ok {
				r.Replicas = len(reps)
			}
		}
	case "slave", "replica":
		r.Role = RoleReplica
		if len(v) < 5 {
			return roleInfo{}, fmt.Errorf("ROLE: short replica reply %v", v)
		}
		host, _ := v[1].(string)
		port, _ := v[2].(int64)
		r.MasterAddr = net.JoinHostPort(host, fmt.Sprint(port))
		r.LinkState, _ = v[3].(string)
		r.Offset, _ = v[4].(int64)
	case "sentinel":
		r.Role = "sentinel"
	default:
		return roleInfo{}, fmt.Errorf("ROLE: unknown role %q", kind)
	}
	return r, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
