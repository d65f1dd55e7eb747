package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/chaos"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// shortFaults are the faults of the campaign `make test` runs: all of them.
var shortFaults = chaos.AllFaults

// TestChaosShort runs a short campaign with a fixed seed against the real
// stack and fails on any violated invariant (none is excused), printing the campaign's report
// (faults, checks, each violation with its timeline and the seed).
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real stack")
	}
	if err := sandbox.CheckBinaries(); err != nil {
		t.Fatal(err)
	}
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var progress sandbox.SyncBuffer
	rep, err := chaos.Run(ctx, chaos.Options{
		Agent: bin, Seed: 20261201, Duration: 2 * time.Minute, SettleEvery: 30 * time.Second,
		Faults: shortFaults, Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.Tail(200))
	}
	var b strings.Builder
	rep.Write(&b)
	t.Log(b.String())
	if v := rep.Violations; len(v) > 0 {
		t.Errorf("%d invariant(s) violated (first: %s: %s); progress:\n%s", len(v), v[0].Invariant, v[0].Detail, progress.Tail(300))
	}
	// A campaign that injected little proves little.
	if rep.Total() < 40 || rep.Checks["dns samples"] < 1000 || rep.Checks["acknowledged writes checked"] < 1000 || rep.Checks["convergence checks"] < 3 ||
		rep.Checks["haproxy session samples"] < 1000 || rep.Checks["acknowledged writes checked via haproxy"] < 1000 {
		t.Errorf("campaign too thin: %d faults, checks %v", rep.Total(), rep.Checks)
	}
}
