package httpapi

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/internal/statustest"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

// fakeSource serves fixed data and counts Cluster calls.
type fakeSource struct {
	mu       sync.Mutex
	snap     status.Snapshot
	cluster  status.Cluster
	calls    int
	delay    time.Duration
	blockCtx bool // Cluster waits for ctx to end
}

func (f *fakeSource) Snapshot() status.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSource) Cluster(ctx context.Context) status.Cluster {
	f.mu.Lock()
	f.calls++
	c, d, block := f.cluster, f.delay, f.blockCtx
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return status.Cluster{Error: "consul: " + ctx.Err().Error()}
	}
	if d > 0 {
		time.Sleep(d)
	}
	return c
}

func (f *fakeSource) set(s status.Snapshot, c status.Cluster) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap, f.cluster = s, c
}

func (f *fakeSource) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// The fixture lives in statustest, which agent/statusclient's tests share.
var (
	entry      = statustest.Entry
	redisEntry = statustest.RedisEntry
)

func fixture(now time.Time, failedOver bool) (status.Snapshot, status.Cluster) {
	return statustest.Fixture(now, failedOver, BuildCluster)
}

// buildCluster is BuildCluster on entries as Consul's health API returns them.
func buildCluster(redis, sentinels, proxies []*api.ServiceEntry, truth []status.Master, views []status.Sentinel) status.Cluster {
	return BuildCluster(statustest.Instances(redis), statustest.Instances(sentinels), statustest.Instances(proxies), truth, views)
}
