package httpapi

import (
	"context"
	"os"
	"os/signal"
	"testing"
	"time"
)

// TestDevServer serves the fixture for working on the dashboard by eye:
//
//	RCA_DASHBOARD_DEV=127.0.0.1:8799 go test -run TestDevServer ./agent/httpapi
//
// The "orders" shard fails over every RCA_DASHBOARD_FLIP (default 15s).
// Without the variable it is skipped: it never ends on its own.
func TestDevServer(t *testing.T) {
	addr := os.Getenv("RCA_DASHBOARD_DEV")
	if addr == "" {
		t.Skip("set RCA_DASHBOARD_DEV=host:port to serve the dashboard fixture")
	}
	flip := 15 * time.Second
	if d, err := time.ParseDuration(os.Getenv("RCA_DASHBOARD_FLIP")); err == nil {
		flip = d
	}
	src := &fakeSource{}
	start := time.Now()
	update := func() {
		// Times are fixed per state, so the page only changes on a flip.
		n := time.Since(start) / flip
		src.set(fixture(start.Add(n*flip+45*time.Second), n%2 == 1))
	}
	update()
	srv, err := New(Options{Addr: addr, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				update()
			}
		}
	}()
	t.Logf("dashboard fixture on http://%s/", addr)
	if err := srv.Serve(ctx); err != nil {
		t.Fatal(err)
	}
}
