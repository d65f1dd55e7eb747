package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// The helpers of haproxy_test.go: the counts on the final master, Sentinel
// failovers and replica links (the writers are sandbox.AckWriter).

// hxSet sends SET on a raw connection and returns the reply's first word
// ("+OK", "-READONLY"), or "closed" once the connection is cut.
func hxSet(c net.Conn) string {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("SET hx:held 1\r\n")); err != nil {
		return "closed"
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "closed"
	}
	return strings.Fields(line + " ")[0]
}

// hxFailover asks a Sentinel for SENTINEL FAILOVER until one succeeds:
// Sentinel gives up a failover whose promotion exceeds failover-timeout and
// does not retry a requested one. It returns the new master and when the
// successful attempt was asked for.
func hxFailover(ctx context.Context, t *testing.T, shard *sandbox.Shard, old string) (string, time.Time, error) {
	var err error
	for attempt := 1; attempt <= 4; attempt++ {
		asked := time.Now()
		if err = shard.AskFailover(ctx, 0); err != nil {
			return "", time.Time{}, err
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		var newAddr string
		newAddr, err = shard.WaitFailover(wctx, old)
		cancel()
		if err == nil {
			return newAddr, asked, nil
		}
		t.Logf("SENTINEL FAILOVER attempt %d did not complete: %v", attempt, err)
	}
	return "", time.Time{}, err
}

func hxExists(ctx context.Context, t *testing.T, address, key string) bool {
	t.Helper()
	c := sandbox.NewClient(address, "")
	defer c.Close()
	n, err := c.Exists(ctx, key).Result()
	if err != nil {
		t.Fatalf("EXISTS on %s: %v", address, err)
	}
	return n == 1
}

// hxMissing counts the keys that are not on the Redis at address.
func hxMissing(ctx context.Context, t *testing.T, address string, keys []string) int {
	t.Helper()
	c := sandbox.NewClient(address, "")
	defer c.Close()
	missing := 0
	for i := 0; i < len(keys); i += 500 {
		batch := keys[i:min(i+500, len(keys))]
		n, err := c.Exists(ctx, batch...).Result()
		if err != nil {
			t.Fatalf("EXISTS on %s: %v", address, err)
		}
		missing += len(batch) - int(n)
	}
	return missing
}

// hxWaitLinked waits until r is a linked replica of the master a Sentinel
// majority names, and returns that master.
func hxWaitLinked(ctx context.Context, shard *sandbox.Shard, r *sandbox.Redis) (string, error) {
	var master string
	err := sandbox.Poll(ctx, r.Name()+" a linked replica of the current master", func(ctx context.Context) error {
		var err error
		if master, err = shard.CurrentMaster(ctx); err != nil {
			return err
		}
		info, err := r.Info(ctx, "replication")
		if err != nil {
			return err
		}
		at := info["master_host"] + ":" + info["master_port"]
		if info["role"] != "slave" || !addr.Same(at, master) || info["master_link_status"] != "up" {
			return fmt.Errorf("role %s of %s, link %s; the Sentinels name %s", info["role"], at, info["master_link_status"], master)
		}
		return nil
	})
	return master, err
}
