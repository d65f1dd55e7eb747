package twemproxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// fakeResolver answers from a table and counts the lookups.
type fakeResolver struct {
	mu      sync.Mutex
	hosts   map[string][]string
	lookups map[string]int
}

func newFakeResolver(hosts map[string][]string) *fakeResolver {
	return &fakeResolver{hosts: hosts, lookups: map[string]int{}}
}

func (f *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups[host]++
	if host == "slow.test" {
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return nil, ctx.Err()
	}
	if a, ok := f.hosts[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func (f *fakeResolver) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups[host]
}

func TestNodeNamesSame(t *testing.T) {
	res := newFakeResolver(map[string][]string{
		"r1.test":    {"10.0.0.1"},
		"dual.test":  {"10.0.0.3", "fd00::3"},
		"alias.test": {"10.0.0.1"},
	})
	n := newNodeNames(res, 50*time.Millisecond, time.Minute)
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"10.0.0.1:6379", "10.0.0.1:6379", true},
		{"10.0.0.1:6379", "r1.test:6379", true},
		{"r1.test:6379", "10.0.0.1:6379", true},
		{"R1.test.:6379", "10.0.0.1:6379", true},
		{"::ffff:10.0.0.1:6379", "r1.test:6379", true}, // twemproxy's IPv6 form, mapped
		{"10.0.0.1:6380", "r1.test:6379", false},       // another port is another node
		{"10.0.0.2:6379", "r1.test:6379", false},
		{"10.0.0.3:6379", "dual.test:6379", true},
		{"fd00::3:6379", "dual.test:6379", true},
		{"[fd00::3]:6379", "dual.test:6379", true},
		{"10.0.0.1:6379", "gone.test:6379", false}, // no answer: different
		{"10.0.0.1:6379", "slow.test:6379", false}, // no answer in time: different
		{"r1.test:6379", "alias.test:6379", false}, // two names are not looked up
		{"10.0.0.1:6379", "10.0.0.2:6379", false},
		{"bad", "r1.test:6379", false},
	} {
		start := time.Now()
		if got := n.same(context.Background(), tc.a, tc.b); got != tc.want {
			t.Errorf("same(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("same(%q, %q) took %s: the lookup is not bounded", tc.a, tc.b, d)
		}
	}
	if c := res.count("alias.test"); c != 0 {
		t.Errorf("two names were looked up (%d)", c)
	}
	// Cached, failures too: one lookup per name however often asked.
	for range 5 {
		n.same(context.Background(), "10.0.0.1:6379", "r1.test:6379")
		n.same(context.Background(), "10.0.0.1:6379", "gone.test:6379")
	}
	if a, g := res.count("r1.test"), res.count("gone.test"); a != 1 || g != 1 {
		t.Errorf("lookups: r1.test %d, gone.test %d; want 1 each", a, g)
	}
	// An expired entry is looked up again.
	n.ttl = 0
	n.same(context.Background(), "10.0.0.1:6379", "r1.test:6379")
	if c := res.count("r1.test"); c != 2 {
		t.Errorf("r1.test looked up %d times after expiry, want 2", c)
	}
}

// TestRunnerKeepsAnIPThatNamesTheTruthsHost: Sentinel reports masters by
// host name, the operator's file lists them by IP. The same node is not
// rewritten (no restart) and the check passes; a failover to another node
// is applied in the truth's form.
func TestRunnerKeepsAnIPThatNamesTheTruthsHost(t *testing.T) {
	for _, mode := range []string{"edit", "template"} {
		t.Run(mode, func(t *testing.T) {
			l1 := freeAddr(t)
			orig := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 shard-a\n", l1)
			res := newFakeResolver(map[string][]string{"r1.test": {"127.0.0.1"}, "r2.test": {"127.0.0.2"}})
			e := newRunnerEnv(t, orig, map[string]string{"shard-a": "r1.test:7001"}, func(o *Options) {
				o.Resolver = res
				if mode == "template" {
					o.TemplateText = fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - {{ server \"shard-a\" 1 }}\n", l1)
				}
			})
			e.start()
			waitFor(t, 5*time.Second, "passing", func() bool { return e.health("main").Status == consulreg.Passing })
			waitFor(t, 5*time.Second, "a status with the pool", func() bool { return len(e.runner.Status().Pools) == 1 })
			if got := e.read(); got != orig {
				t.Errorf("the IP of the same node was rewritten:\n%s", got)
			}
			if r, _ := e.proxy.counts(); r != 0 {
				t.Errorf("proxy restarted %d times for the same node", r)
			}
			if s := e.runner.Status().Pools[0].Servers[0]; !s.Matches {
				t.Errorf("server status: %+v", s)
			}
			if rd, err := e.runner.Render(); err != nil || rd.Changed() {
				t.Errorf("render: changed %v, %v", rd.Changed(), err)
			}

			e.src.set("shard-a", "r2.test:7001")
			waitFor(t, 5*time.Second, "the failover applied", func() bool { r, _ := e.proxy.counts(); return r == 1 })
			if got := e.read(); !strings.Contains(got, "- r2.test:7001:1 shard-a") {
				t.Errorf("file after the failover:\n%s", got)
			}
			waitFor(t, 5*time.Second, "passing after the failover", func() bool { return e.health("main").Status == consulreg.Passing })
		})
	}
}
