package sandbox

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestTLSRedis: a master and a replica on TLS only replicate over TLS, and a
// Sentinel on TLS only monitors them; the helpers work through the handles'
// TLS configs, while plain RESP and TLS without a client certificate are
// refused.
func TestTLSRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and redis-sentinel")
	}
	for _, b := range []string{"redis-server", "redis-sentinel"} {
		if _, err := Binary(b); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newTestCluster(t)
	ca, err := NewCA(t.TempDir(), "test")
	if err != nil {
		t.Fatal(err)
	}
	master, err := c.StartRedis(RedisOptions{TLS: ca})
	if err != nil {
		t.Fatal(err)
	}
	replica, err := c.StartRedis(RedisOptions{ReplicaOf: master.Addr(), TLS: ca})
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitReplicaLinked(ctx); err != nil {
		t.Fatal(err)
	}
	if role, err := replica.Role(ctx); err != nil || role != "slave" {
		t.Fatalf("replica role %q, %v", role, err)
	}
	if v, err := DoTLS(ctx, master.Addr(), master.TLS, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING over TLS: %v %v", v, err)
	}
	noCert, err := ca.ClientTLS("", "")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := DoTLS(ctx, master.Addr(), noCert, "PING"); err == nil {
		t.Fatalf("PING over TLS without a client certificate answered %v", v)
	}
	if v, err := Do(ctx, master.Addr(), "PING"); err == nil {
		t.Fatalf("plain PING on the TLS port answered %v", v)
	}
	s, err := c.StartSentinel(SentinelOptions{Monitors: []Monitor{{Name: "m", Master: master.Addr(), Quorum: 1}}, TLS: ca})
	if err != nil {
		t.Fatal(err)
	}
	err = Poll(ctx, "the Sentinel sees the replica over TLS", func(ctx context.Context) error {
		r, err := s.Replicas(ctx, "m")
		if err == nil && (len(r) != 1 || r[0]["flags"] != "slave") {
			err = fmt.Errorf("replicas %v", r)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
