package harness

import (
	"strings"
)

// TB is the part of testing.TB the harness needs; the package does not import
// testing so the demo command can use it.
type TB interface {
	Helper()
	Cleanup(func())
	Failed() bool
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
}

// ForTest returns a Cluster in t.TempDir() (unless opts.Dir is set) whose
// processes are killed when the test ends; if the test failed, the tail of
// every process log is logged first. A missing binary fails the test (it never
// skips) with a hint to run `make deps`.
func ForTest(t TB, opts Options) *Cluster {
	t.Helper()
	if err := CheckBinaries(); err != nil {
		t.Fatalf("integration harness: %v", err)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	c, err := New(opts)
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
