package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	retry "github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// Sentinel links: the known set of Sentinels (configured plus discovered),
// one query client and one pub/sub subscription each, reconnected with
// backoff, and a ping that notices a Sentinel that hangs.

// sentinel is one known Sentinel: a query client and a subscription link.
type sentinel struct {
	addr   string
	client *redis.Client
	stop   context.CancelFunc
	status SentinelStatus
	names  *namesCache
	// failed is set once the link has failed: the first failure of a
	// link that never came up (a wrong CA, TLS off, a wrong password at
	// start) is a warning, the retries after it are not.
	failed bool
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

// setSentinels makes the known set Addresses ∪ discovered, starting and
// stopping links as needed.
func (m *Monitor) setSentinels(ctx context.Context, discovered []string) {
	if discovered != nil {
		m.discoveredA = discovered
	}
	want := make(map[string]string)
	for _, a := range append(slices.Clone(m.opts.Addresses), m.discoveredA...) {
		if _, ok := want[addr.Normalize(a)]; !ok {
			want[addr.Normalize(a)] = a
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
	bo := retry.Backoff{Min: m.opts.BackoffMin, Max: m.opts.BackoffMax}
	for {
		up, err := m.subscribe(ctx, addr, client)
		if ctx.Err() != nil {
			return
		}
		if up {
			bo.Reset()
		}
		select {
		case m.links <- linkChange{addr: addr, up: false, err: err}:
		case <-ctx.Done():
			return
		}
		t := time.NewTimer(bo.Next())
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
	s := m.sentinels[addr.Normalize(lc.addr)]
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
		switch {
		case was:
			m.log.Warn("sentinel link down", "sentinel", s.addr, "error", lc.err)
			m.opts.Journal.Add(telemetry.Event{
				Kind: telemetry.KindSentinel, Type: "link-down", Subject: s.addr,
				Detail: errString(lc.err), Level: "warn",
			})
		case !s.failed:
			m.log.Warn("cannot reach sentinel; retrying", "sentinel", s.addr, "error", lc.err)
		default:
			m.log.Debug("sentinel link still down", "sentinel", s.addr, "error", lc.err)
		}
		s.failed = true
	}
	m.publishStatuses()
}

// requestPoll starts a poll of every Sentinel, or asks for another one
