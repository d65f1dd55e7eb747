package discovery

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// SentinelInstanceOptions configure the runner of one local Sentinel.
type SentinelInstanceOptions struct {
	Address  string // where the agent connects (host:port)
	Announce string // what goes into Consul; default Address
	Service  string // Consul service name; default "redis-sentinel"

	Username  string
	Password  string
	TLSConfig *tls.Config

	Tick    time.Duration // default 1s
	Timeout time.Duration // default 500ms

	Registry Registry // required

	// Logger is used as is: pass the agent's logger.Named(telemetry.LogSentinel)
	// (with the service ID). Metrics and Journal are accepted so every runner
	// is wired alike; the Registry already records the Consul side.
	Logger  hclog.Logger
	Metrics *telemetry.Metrics
	Journal *telemetry.Journal
}

// SentinelInstanceStatus is a snapshot of one local Sentinel.
type SentinelInstanceStatus struct {
	Address   string
	Announce  string
	ServiceID string
	Masters   []string
	Status    string
	Output    string
	Updated   time.Time
	LastError string
}

// SentinelInstance keeps one local Sentinel registered as redis-sentinel,
// tagged with the master names it monitors, so that clients and other
// agents can find the Sentinels through Consul (ConsulSentinels).
type SentinelInstance struct {
	opts SentinelInstanceOptions
	log  hclog.Logger
	id   string
	host string
	port int

	mu       sync.Mutex
	status   SentinelInstanceStatus
	lastTags []string
}

// NewSentinelInstance checks the options and returns the runner.
func NewSentinelInstance(o SentinelInstanceOptions) (*SentinelInstance, error) {
	if o.Announce == "" {
		o.Announce = o.Address
	}
	if _, _, err := addr.Split(o.Address); err != nil {
		return nil, fmt.Errorf("sentinel instance: %w", err)
	}
	host, port, err := addr.Split(o.Announce)
	if err != nil {
		return nil, fmt.Errorf("sentinel instance %s: announce: %w", o.Address, err)
	}
	if o.Registry == nil {
		return nil, fmt.Errorf("sentinel instance %s: registry is required", o.Address)
	}
	if o.Service == "" {
		o.Service = "redis-sentinel"
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	id := consulname.ServiceID(o.Service, o.Announce)
	return &SentinelInstance{
		opts: o, log: o.Logger, id: id, host: host, port: port,
		status: SentinelInstanceStatus{Address: o.Address, Announce: o.Announce, ServiceID: id},
	}, nil
}

// ServiceID is the Consul service ID this runner registers.
func (s *SentinelInstance) ServiceID() string { return s.id }

// Status returns a snapshot for the status API.
func (s *SentinelInstance) Status() SentinelInstanceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Masters = slices.Clone(st.Masters)
	return st
}

// Run checks the Sentinel every Tick until ctx is done and returns nil.
func (s *SentinelInstance) Run(ctx context.Context) error {
	c := redis.NewClient(failFast(s.opts.Address, s.opts.Username, s.opts.Password, s.opts.TLSConfig, s.opts.Timeout, 1))
	defer c.Close()
	tick := time.NewTicker(s.opts.Tick)
	defer tick.Stop()
	for {
		s.evaluate(ctx, c)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *SentinelInstance) evaluate(ctx context.Context, c *redis.Client) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	err := c.Ping(rctx).Err()
	var masters map[string]masterInfo
	if err == nil {
		masters, err = sentinelMasters(rctx, c)
	}
	cancel()
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	last := s.lastTags
	s.mu.Unlock()
	tags, h := decideSentinel(masters, err, last)
	svc := Service{ID: s.id, Name: s.opts.Service, Tags: tags, Address: s.host, Port: s.port}
	uerr := s.opts.Registry.Update(ctx, svc, h)

	s.mu.Lock()
	defer s.mu.Unlock()
	if uerr == nil {
		s.lastTags = tags
	}
	if s.status.Status != h.Status {
		s.log.Info("sentinel check", "status", h.Status, "output", h.Output)
	}
	s.status.Masters = slices.Sorted(maps.Keys(masters))
	s.status.Status, s.status.Output, s.status.Updated = h.Status, h.Output, time.Now()
	s.status.LastError = errString(uerr)
}

// decideSentinel turns a Sentinel's answer into its tags and check:
// critical when it does not answer (keeping the last tags), warning when it
// monitors nothing or sees a master subjectively or objectively down,
// passing otherwise.
func decideSentinel(masters map[string]masterInfo, err error, lastTags []string) ([]string, Health) {
	if err != nil {
		return lastTags, Health{Status: api.HealthCritical, Output: "sentinel unreachable: " + err.Error()}
	}
	if len(masters) == 0 {
		return nil, Health{Status: api.HealthWarning, Output: "sentinel monitors no master"}
	}
	names := slices.Sorted(maps.Keys(masters))
	tagSet := map[string]bool{}
	var down, ok []string
	for _, n := range names {
		tagSet[consulname.DNSLabel(n)] = true
		mi := masters[n]
		var bad []string
		for _, f := range mi.Flags {
			if f == "s_down" || f == "o_down" {
				bad = append(bad, f)
			}
		}
		if len(bad) > 0 {
			down = append(down, fmt.Sprintf("%s at %s is %s", n, mi.Addr, strings.Join(bad, "+")))
		} else {
			ok = append(ok, n+" at "+mi.Addr)
		}
	}
	tags := slices.Sorted(maps.Keys(tagSet))
	if len(down) > 0 {
		return tags, Health{Status: api.HealthWarning, Output: "monitoring " + strings.Join(names, ", ") + "; " + strings.Join(down, "; ")}
	}
	return tags, Health{Status: api.HealthPassing, Output: "monitoring " + strings.Join(ok, ", ")}
}
