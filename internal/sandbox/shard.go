package sandbox

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// ShardOptions describe one master with its replicas, watched by Sentinels.
type ShardOptions struct {
	Name     string // Sentinel master name, default "mymaster"; also names the nodes
	Replicas int
	// Use adds the shard to these running Sentinels (SENTINEL MONITOR) with
	// their own timings; otherwise Sentinels new ones are started (default 3).
	Use       []*Sentinel
	Sentinels int
	Quorum    int // default 2
	// DownAfter and FailoverTimeout apply to new Sentinels (defaults 1s, 3s).
	DownAfter       time.Duration
	FailoverTimeout time.Duration
	Password        string // requirepass/masterauth on every node, auth-pass on new Sentinels
	// RedisExtra are more redis.conf lines for every node, e.g. an ACL user:
	// "user agent on >secret +role +info".
	RedisExtra []string
	// Hosts, when set, gives every node a hostname in it; the nodes
	// replicate from and announce that name, and new Sentinels monitor the
	// master by it with resolve-hostnames and announce-hostnames on, so
	// that Sentinel reports every node by hostname.
	Hosts *Hosts
	// TLS puts every node and every new Sentinel on TLS only, with
	// certificates from this CA (RedisOptions.TLS); Use Sentinels must
	// have been started with the same CA.
	TLS *CA
}

// Shard is a master, its replicas and the Sentinels that watch them.
type Shard struct {
	Name      string
	Master    *Redis   // the master at start; after a failover ask CurrentMaster
	Replicas  []*Redis // the replicas at start
	Sentinels []*Sentinel
	Quorum    int
}

// StartShard starts the master and replicas, waits until every replica is
// linked, makes the Sentinels monitor the master and waits until each Sentinel
// knows every replica and every other Sentinel.
func (c *Cluster) StartShard(opts ShardOptions) (*Shard, error) {
	if opts.Name == "" {
		opts.Name = "mymaster"
	}
	if opts.Quorum <= 0 {
		opts.Quorum = 2
	}
	if opts.Sentinels <= 0 && len(opts.Use) == 0 {
		opts.Sentinels = 3
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.StartTimeout)
	defer cancel()
	s := &Shard{Name: opts.Name, Quorum: opts.Quorum}
	var err error
	if s.Master, err = c.StartRedis(RedisOptions{Name: c.nextName(opts.Name), Password: opts.Password, Extra: opts.RedisExtra, Hosts: opts.Hosts, TLS: opts.TLS}); err != nil {
		return nil, err
	}
	for range opts.Replicas {
		r, err := c.StartRedis(RedisOptions{Name: c.nextName(opts.Name), ReplicaOf: s.Master.Announced(), Password: opts.Password, Extra: opts.RedisExtra, Hosts: opts.Hosts, TLS: opts.TLS})
		if err != nil {
			return nil, err
		}
		s.Replicas = append(s.Replicas, r)
	}
	// Linked replicas are in the master's INFO when a Sentinel first asks, so
	// it knows them at once instead of after its 10s INFO period.
	for _, r := range s.Replicas {
		if err := r.WaitReplicaLinked(ctx); err != nil {
			return nil, err
		}
	}
	mon := Monitor{Name: opts.Name, Master: s.Master.Announced(), Quorum: opts.Quorum}
	if len(opts.Use) > 0 {
		s.Sentinels = opts.Use
		for _, sn := range s.Sentinels {
			if err := sn.Monitor(ctx, mon); err != nil {
				return nil, err
			}
		}
	} else {
		s.Sentinels, err = c.StartSentinels(opts.Sentinels, SentinelOptions{
			Monitors: []Monitor{mon}, DownAfter: opts.DownAfter, FailoverTimeout: opts.FailoverTimeout, Password: opts.Password,
			Hostnames: opts.Hosts != nil,
			TLS:       opts.TLS,
		})
		if err != nil {
			return nil, err
		}
	}
	return s, s.WaitSentinelsDiscovered(ctx)
}

// StartSentinels starts n Sentinels with the same options (names sentinel-N).
func (c *Cluster) StartSentinels(n int, opts SentinelOptions) ([]*Sentinel, error) {
	var out []*Sentinel
	for range n {
		o := opts
		o.Name = ""
		s, err := c.StartSentinel(o)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Nodes are the master and replicas the shard started with.
func (s *Shard) Nodes() []*Redis { return append([]*Redis{s.Master}, s.Replicas...) }

// Node returns the shard's node at addr (its IP or its announced hostname), or nil.
func (s *Shard) Node(addr string) *Redis {
	for _, r := range s.Nodes() {
		if r.Addr() == addr || r.Announced() == addr {
			return r
		}
	}
	return nil
}

// CurrentMaster returns the address a majority of the shard's Sentinels (of all
// of them, reachable or not) report for the master name, asked in parallel.
func (s *Shard) CurrentMaster(ctx context.Context) (string, error) {
	votes := map[string]int{}
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sn := range s.Sentinels {
		wg.Go(func() {
			addr, err := sn.MasterAddr(ctx, s.Name)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			votes[addr]++
		})
	}
	wg.Wait()
	for addr, n := range votes {
		if n > len(s.Sentinels)/2 {
			return addr, nil
		}
	}
	return "", fmt.Errorf("no Sentinel majority for %s: votes %v, errors %v", s.Name, votes, errs)
}

// AskFailover asks Sentinel i for SENTINEL FAILOVER of the shard (a planned
// failover), again while it refuses: it has no good replica yet, one that
// came back a moment ago, or a failover is already running.
func (s *Shard) AskFailover(ctx context.Context, i int) error {
	c := s.Sentinels[i].Client()
	defer c.Close()
	return poll(ctx, "SENTINEL FAILOVER "+s.Name, func(ctx context.Context) error {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return c.Failover(qctx, s.Name).Err()
	})
}

// WaitFailover waits until a Sentinel majority names a master other than
// oldAddr and that node reports role master; it returns the new address.
func (s *Shard) WaitFailover(ctx context.Context, oldAddr string) (string, error) {
	var addr string
	err := poll(ctx, "failover of "+s.Name+" away from "+oldAddr, func(ctx context.Context) error {
		a, err := s.CurrentMaster(ctx)
		if err != nil {
			return err
		}
		if a == oldAddr {
			return fmt.Errorf("the Sentinels still name %s", a)
		}
		role, err := roleOf(ctx, a, s.Master.Password, s.Master.TLS)
		if err != nil {
			return err
		}
		if role != "master" {
			return fmt.Errorf("%s has role %s", a, role)
		}
		addr = a
		return nil
	})
	return addr, err
}

// WaitSentinelsDiscovered waits until every Sentinel of the shard reports at
// least len(Replicas) replicas and every other Sentinel (SENTINEL MASTER).
func (s *Shard) WaitSentinelsDiscovered(ctx context.Context) error {
	for _, sn := range s.Sentinels {
		err := poll(ctx, sn.Name()+" discovery of "+s.Name, func(ctx context.Context) error {
			m, err := sn.Master(ctx, s.Name)
			if err != nil {
				return err
			}
			slaves, _ := strconv.Atoi(m["num-slaves"])
			others, _ := strconv.Atoi(m["num-other-sentinels"])
			if slaves < len(s.Replicas) || others < len(s.Sentinels)-1 {
				return fmt.Errorf("num-slaves=%d num-other-sentinels=%d", slaves, others)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func roleOf(ctx context.Context, addr, password string, tc *tls.Config) (string, error) {
	cl := NewTLSClient(addr, password, tc)
	defer cl.Close()
	s, err := cl.Info(ctx, "replication").Result()
	if err != nil {
		return "", fmt.Errorf("INFO replication on %s: %w", addr, err)
	}
	return parseInfo(s)["role"], nil
}
