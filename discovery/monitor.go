package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// The Monitor: its options, its Run loop (the only writer of the truth) and
// the snapshots it publishes. Each job the loop dispatches lives in its own
// file: links.go (Sentinel links and subscriptions), poll.go (resync),
// vote.go (counting the Sentinels' reports), message.go (pub/sub events),
// confirm.go (+switch-master confirmation); truth.go holds the pure rule.

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
	// FollowPromotion makes the replica a leader Sentinel selected the
	// truth (SourcePromotion) as soon as it answers ROLE master during the
	// failover, before any +switch-master (see failover.go). Off, the
	// Monitor acts on the announcement only.
	FollowPromotion bool
	// BackoffMin and BackoffMax bound the reconnect delay of a Sentinel
	// link (default 100ms and 5s).
	BackoffMin, BackoffMax time.Duration

	// Logger is used as is: pass the agent's logger.Named(telemetry.LogSentinel).
	// Metrics and Journal are shared by the whole agent. Metrics is required
	// (telemetry.Discard() where nobody scrapes them), so that a caller
	// cannot forget them silently; a nil Journal records nothing.
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
}

// SentinelStatus is one Sentinel as the Monitor sees it, for the status API.
type SentinelStatus struct {
	Addr      string
	ID        string // SENTINEL MYID: one Sentinel known by two addresses counts once
	LinkUp    bool   // the pub/sub subscription is established
	Reachable bool   // it answered the last poll
	LastError string
	LastPoll  time.Time
	View      map[string]string // master name → address it reports
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
	// pollNow asks for a poll at a promotion's deadline (see applyPromotion).
	pollNow chan struct{}

	// Published state.
	mu       sync.RWMutex
	masters  map[string]Master
	statuses map[string]SentinelStatus
	foViews  map[string]FailoverView // by master name: see failover_view.go

	subMu   sync.Mutex
	subs    map[int]chan struct{}
	nextSub int

	// configNoPerm is set once a Sentinel refused SENTINEL MASTER (the
	// config-epoch check of epoch.go), so that it is warned about once.
	configNoPerm atomic.Bool

	// Owned by the Run loop.
	wg          sync.WaitGroup
	sentinels   map[string]*sentinel // by normalized address
	discoveredA []string
	truth       map[string]*truthState
	pending     map[string]pendingSwitch // by master name: the newest +switch-master whose ROLE is being confirmed
	switched    map[string]time.Time     // by master name: arrival of the newest +switch-master applied
	recent      map[string]time.Time
	timedOut    map[string]time.Time     // by Sentinel and master name (timedOutKey): its last +failover-end-for-timeout
	failovers   map[string]*failover     // by master name: the failover its leader is running
	epochs      map[string]uint64        // by Sentinel (normalized address): its last +new-epoch
	timeouts    map[string]time.Duration // by master name: failover-timeout from SENTINEL MASTERS
	downAfters  map[string]time.Duration // by master name: the least down-after-milliseconds reported
	polling     bool
	pollAgain   bool
	discovering bool
}

// NewMonitor checks the options and returns a Monitor; Run starts it.
func NewMonitor(o MonitorOptions) (*Monitor, error) {
	if len(o.Addresses) == 0 && o.Discover == nil {
		return nil, errors.New("sentinel monitor: no sentinel addresses and no discovery")
	}
	if o.Metrics == nil {
		return nil, errors.New("sentinel monitor: no metrics (pass telemetry.Discard() to record none)")
	}
	for _, a := range o.Addresses {
		if _, _, err := addr.Split(a); err != nil {
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
		pollNow:    make(chan struct{}, 1),
		discovered: make(chan []string, 1),
		masters:    make(map[string]Master),
		statuses:   make(map[string]SentinelStatus),
		foViews:    make(map[string]FailoverView),
		subs:       make(map[int]chan struct{}),
		sentinels:  make(map[string]*sentinel),
		truth:      make(map[string]*truthState),
		pending:    make(map[string]pendingSwitch),
		switched:   make(map[string]time.Time),
		recent:     make(map[string]time.Time),
		timedOut:   make(map[string]time.Time),
		failovers:  make(map[string]*failover),
		epochs:     make(map[string]uint64),
		timeouts:   make(map[string]time.Duration),
		downAfters: make(map[string]time.Duration),
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
		case <-m.pollNow:
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

func (m *Monitor) publishStatuses() {
	st := make(map[string]SentinelStatus, len(m.sentinels))
	for k, s := range m.sentinels {
		st[k] = s.status
	}
	m.mu.Lock()
	m.statuses = st
	m.mu.Unlock()
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
