package integration

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/demo"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestDemo runs what `make demo` runs and checks that what its guide
// promises works: DNS answers the master, twemproxy takes writes, and the
// dashboard answers.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole demo stack")
	}
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var checked bool
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = demo.Run(ctx, demo.Options{Agent: bin, Dir: t.TempDir(), Out: &out, Ready: func(st *demo.Stack) {
		checked = true
		master := st.Shard.Master
		if err := sandbox.Poll(ctx, "DNS answers the demo master", func(ctx context.Context) error {
			ips, err := st.Consul.LookupA(ctx, "master.redis.service.consul")
			if err != nil {
				return err
			}
			if len(ips) != 1 || ips[0] != master.IP() {
				return fmt.Errorf("master.redis.service.consul = %v, want [%s]", ips, master.IP())
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		if err := sandbox.Poll(ctx, "write through twemproxy", func(ctx context.Context) error {
			_, err := sandbox.Do(ctx, st.Proxy, "SET", "demo", "ok")
			return err
		}); err != nil {
			t.Error(err)
		}
		if v, err := master.Client().Get(ctx, "demo").Result(); err != nil || v != "ok" {
			t.Errorf("the write through twemproxy did not land on the master: %q, %v", v, err)
		}
		if err := sandbox.Poll(ctx, "dashboard", func(ctx context.Context) error {
			return sandbox.HTTPOK(ctx, st.Dashboard)
		}); err != nil {
			t.Error(err)
		}
	}})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !checked {
		t.Fatal("the demo never became ready")
	}
	for _, want := range []string{"Dashboard", "dig @", "sentinel failover mymaster"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the guide does not mention %q:\n%s", want, out.String())
		}
	}
}
