package twemproxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// digitsMasked is how the registrar tells a new reason from new numbers
// (discovery's newReason): an output that differs only in its digits is
// not pushed to Consul until the check's slow refresh.
func digitsMasked(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return '#'
		}
		return r
	}, s)
}

// TestPoolCheckSaysWhetherServersFollowSentinel: before the agent knows the
// Sentinel truth, a passing pool must not read as following Sentinel, and
// the output once it follows must differ in words, not only in numbers, or
// Consul keeps showing the first one (the "0 of 1 servers follow Sentinel"
// beside a passing pool of issue 13).
func TestPoolCheckSaysWhetherServersFollowSentinel(t *testing.T) {
	l1 := freeAddr(t)
	cfg := fmt.Sprintf("main:\n  listen: %s\n  redis: true\n  servers:\n   - 127.0.0.1:7001:1 a\n   - 127.0.0.1:7002:1 b\n", l1)
	e := newRunnerEnv(t, cfg, map[string]string{}, nil)
	e.start()
	var before, partial, after consulreg.Health
	waitFor(t, 5*time.Second, "passing without a truth", func() bool {
		before = e.health("main")
		return before.Status == consulreg.Passing
	})
	if !strings.Contains(before.Output, "none follows Sentinel") {
		t.Errorf("output without a truth = %q, want it to say none follows Sentinel", before.Output)
	}

	e.src.set("a", "127.0.0.1:7001")
	waitFor(t, 5*time.Second, "one of two servers followed", func() bool {
		partial = e.health("main")
		return partial.Status == consulreg.Passing && partial.Output != before.Output
	})
	if !strings.Contains(partial.Output, "1 of 2 servers follow Sentinel") || !strings.Contains(partial.Output, "not named after a master the Sentinels report: b") {
		t.Errorf("output with one server followed = %q", partial.Output)
	}

	e.src.set("b", "127.0.0.1:7002")
	waitFor(t, 5*time.Second, "every server followed", func() bool {
		after = e.health("main")
		return after.Status == consulreg.Passing && after.Output != partial.Output
	})
	if !strings.Contains(after.Output, "every server is on its Sentinel master") {
		t.Errorf("output with every server followed = %q", after.Output)
	}
	for _, pair := range [][2]string{{before.Output, partial.Output}, {partial.Output, after.Output}, {before.Output, after.Output}} {
		if digitsMasked(pair[0]) == digitsMasked(pair[1]) {
			t.Errorf("%q and %q differ only in numbers: Consul would keep showing the first", pair[0], pair[1])
		}
	}
}
