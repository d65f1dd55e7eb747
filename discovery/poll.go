package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// Polling: every ResyncInterval, and whenever an event or a link suggests
// the truth moved, every Sentinel is asked which address it names for each
// master, so that a missed event is repaired within one interval.

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

type sentinelView struct {
	addr    string
	id      string // SENTINEL MYID, "" if unknown
	err     error
	masters map[string]string // name → address (get-master-addr-by-name)
	// timeouts are the failover-timeouts of SENTINEL MASTERS, when it was read.
	timeouts map[string]time.Duration
	// downAfters are the down-after-milliseconds of SENTINEL MASTERS.
	downAfters map[string]time.Duration
}

type pollResult struct {
	at    time.Time
	views []sentinelView
}

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
func (m *Monitor) pollOne(ctx context.Context, from string, c *redis.Client, cache *namesCache) sentinelView {
	v := sentinelView{addr: from}
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
		v.timeouts = make(map[string]time.Duration, len(infos))
		v.downAfters = make(map[string]time.Duration, len(infos))
		for n, mi := range infos {
			v.timeouts[n] = mi.FailoverTimeout
			v.downAfters[n] = mi.DownAfter
		}
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
		if a, err := addr.Join(hp[0], hp[1]); err == nil {
			v.masters[n] = a
		}
	}
	return v
}

// applyPoll stores the views and recomputes the truth of every name the
// Monitor knows or a Sentinel reported.
func (m *Monitor) applyPoll(res pollResult) {
	names := map[string]bool{}
	for n := range m.truth {
		names[n] = true
	}
	for _, v := range res.views {
		s := m.sentinels[addr.Normalize(v.addr)]
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
		for n, d := range v.timeouts {
			m.timeouts[n] = max(m.timeouts[n], d)
		}
		for n, d := range v.downAfters {
			if cur := m.downAfters[n]; d > 0 && (cur == 0 || d < cur) {
				m.downAfters[n] = d // the quickest Sentinel to call a silent master down
			}
		}
	}
	m.publishStatuses()
	for n := range names {
		m.recount(n, res.at)
	}
}
