// Package harness adapts the sandbox to Go tests: a Cluster per test that is
// torn down when the test ends, with the logs of every process it started
// printed when the test failed, and the agent binary the tests run.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// ForTest returns a Cluster in t.TempDir() (unless opts.Dir is set) whose
// processes are killed when the test ends; if the test failed, the tail of
// every process log is logged first. A missing binary fails the test (it never
// skips) with a hint to run `make deps`. Agents it starts run AgentBinary().
func ForTest(t testing.TB, opts sandbox.Options) *sandbox.Cluster {
	t.Helper()
	if err := sandbox.CheckBinaries(); err != nil {
		t.Fatalf("integration harness: %v", err)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.AgentBin == "" {
		bin, err := AgentBinary()
		if err != nil {
			t.Fatalf("integration harness: %v", err)
		}
		opts.AgentBin = bin
	}
	c, err := sandbox.New(opts)
	if err != nil {
		t.Fatalf("integration harness: %v", err)
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			c.DumpLogs(&b)
			t.Logf("logs of the processes this test started:\n%s", b.String())
		}
		_ = c.Close()
	})
	return c
}

var agentBuild struct {
	once sync.Once
	path string
	err  error
}

// AgentBinary returns the redis-consul-agent binary the tests run:
// RCA_AGENT_BIN (make sets it to the freshly built bin/), or else one built
// once per test binary from this module.
func AgentBinary() (string, error) {
	if p := os.Getenv("RCA_AGENT_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("RCA_AGENT_BIN: %w", err)
		}
		return p, nil
	}
	agentBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "rca-agent-bin-")
		if err != nil {
			agentBuild.err = err
			return
		}
		out := filepath.Join(dir, "redis-consul-agent")
		cmd := exec.Command("go", "build", "-o", out, "github.com/seed42ef8afe/redis-consul-agent/cmd/redis-consul-agent")
		if b, err := cmd.CombinedOutput(); err != nil {
			agentBuild.err = fmt.Errorf("build agent: %v\n%s", err, b)
			return
		}
		agentBuild.path = out
	})
	return agentBuild.path, agentBuild.err
}
