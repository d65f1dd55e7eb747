package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds headless Chromium: $RCA_CHROMIUM_BIN, else the Debian
// package's binary. A missing browser fails the test: `make deps` installs
// it (Debian packages chromium and chromium-driver).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("RCA_CHROMIUM_BIN"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium found ($RCA_CHROMIUM_BIN, chromium on PATH): run `make deps` or apt-get install -y chromium chromium-driver")
	return ""
}

// browser starts a headless Chromium for the test, quiet and offline: no
// sandbox (we run as root), no GPU, nothing that phones home. Its output goes
// to a file logged when the test fails.
func browser(t *testing.T) context.Context {
	t.Helper()
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.WindowSize(1440, 900),
		chromedp.CombinedOutput(out),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		out.Close()
		if t.Failed() {
			if b, err := os.ReadFile(out.Name()); err == nil && len(b) > 0 {
				t.Logf("chromium output:\n%s", tailLines(string(b), 40))
			}
		}
	})
	return bctx
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pageProblems collects what a healthy page never produces: uncaught
// exceptions, console.error calls and security (CSP) or JavaScript log
// entries. Network log entries are kept apart, for the failure message.
type pageProblems struct {
	mu       sync.Mutex
	problems []string
	network  []string
}

func (p *pageProblems) listen(ev any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg := e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			msg += " " + e.ExceptionDetails.Exception.Description
		}
		p.problems = append(p.problems, "exception: "+msg)
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			p.problems = append(p.problems, "console.error: "+strings.Join(parts, " "))
		}
	case *log.EventEntryAdded:
		if e.Entry.Level != log.EntryLevelError && e.Entry.Source != log.EntrySourceSecurity {
			return
		}
		line := fmt.Sprintf("%s %s: %s %s", e.Entry.Source, e.Entry.Level, e.Entry.Text, e.Entry.URL)
		if e.Entry.Source == log.EntrySourceNetwork {
			p.network = append(p.network, line)
			return
		}
		p.problems = append(p.problems, line)
	}
}

func (p *pageProblems) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.problems {
		t.Errorf("page: %s", pr)
	}
	if len(p.problems) > 0 && len(p.network) > 0 {
		t.Logf("network log:\n%s", strings.Join(p.network, "\n"))
	}
}

// screenshotDir is where the browser test saves its pictures:
// $RCA_SCREENSHOT_DIR (docs/screenshots when refreshing the repo's), else
// the test's temp dir.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("RCA_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func screenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// evalString runs a JavaScript expression in the page and returns its
// string value.
func evalString(ctx context.Context, expr string) (string, error) {
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ectx, chromedp.Evaluate[string](expr))
}

// TestDashboardFollowsFailover opens the dashboard in headless Chromium,
// sees the master, kills it, and sees the new master and the failover in
// the timeline, with the reaction times of Consul and twemproxy, without a
// reload.
func TestDashboardFollowsFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker, the agent and Chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	st := startOpsStack(t, ctx)
	shots := screenshotDir(t)

	bctx := browser(t)
	problems := &pageProblems{}
	// The first Run starts the browser; it must not carry a deadline, which
	// would stop the browser with it.
	if err := chromedp.Listen(bctx, problems.listen); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = chromedp.Cancel(bctx) })
	defer stop()
	browserUp := time.Now()
	if err := chromedp.Do(bctx, chromedp.Navigate(st.url+"/")); err != nil {
		t.Fatalf("open %s: %v", st.url, err)
	}
	t.Logf("chromium opened the dashboard in %s", time.Since(browserUp).Round(time.Millisecond))

	shard := st.shard.Name
	oldMaster := st.shard.Master.Addr()
	masterJS := fmt.Sprintf(`(function(){var c=document.querySelector('[data-shard=%q]');return c?c.getAttribute('data-master')+'|'+c.querySelector('.master-addr').textContent.trim():''})()`, shard)
	if err := opsPoll(ctx, "the dashboard to show master "+oldMaster, func(context.Context) error {
		v, err := evalString(bctx, masterJS)
		if err != nil {
			return err
		}
		if v != oldMaster+"|"+oldMaster {
			return fmt.Errorf("shard card says %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if h, err := evalString(bctx, fmt.Sprintf(`document.querySelector('[data-shard=%q] .badge').textContent`, shard)); err != nil || h != "OK" {
		t.Errorf("shard badge = %q, %v; want OK", h, err)
	}
	// A mark on the window: a reload would wipe it. The pictures use the
	// dark theme, as a wall screen would.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[chromedp.Void](`window.__rcaNoReload = "kept"; localStorage.setItem('rca-theme', 'dark'); document.documentElement.setAttribute('data-theme', 'dark')`)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, bctx, filepath.Join(shots, "dashboard-before-failover.png"))

	_, newMaster := st.failover(t, ctx)
	failedAt := time.Now()
	rowJS := fmt.Sprintf(`(function(){var r=document.querySelector('tr[data-failover=%q][data-to=%q]');if(!r)return '';return Array.from(r.cells).map(function(c){return c.textContent.trim()}).join('|')})()`, shard, newMaster)
	var row string
	if err := opsPoll(ctx, "the dashboard to show "+newMaster+" and its failover, both reactions timed", func(context.Context) error {
		v, err := evalString(bctx, masterJS)
		if err != nil {
			return err
		}
		if v != newMaster+"|"+newMaster {
			return fmt.Errorf("shard card says %q", v)
		}
		if row, err = evalString(bctx, rowJS); err != nil {
			return err
		}
		cells := strings.Split(row, "|")
		if len(cells) < 5 {
			return fmt.Errorf("no timeline row for %s yet (%q)", newMaster, row)
		}
		if cells[3] == "—" || cells[4] == "—" {
			return fmt.Errorf("timeline row without both reaction times yet: %q", row)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the page showed the new master and the timeline %s after Sentinel promoted it: %s",
		time.Since(failedAt).Round(time.Millisecond), row)
	if !strings.Contains(row, "→ "+newMaster) || !strings.Contains(row, shard) {
		t.Errorf("timeline row = %q, want shard %s and → %s", row, shard, newMaster)
	}
	if v, err := evalString(bctx, `String(window.__rcaNoReload)`); err != nil || v != "kept" {
		t.Errorf("the page was reloaded (marker %q, %v): it must update in place", v, err)
	}
	if v, err := evalString(bctx, `document.querySelector('#conn .conn-text').textContent`); err != nil || v != "live" {
		t.Errorf("connection indicator = %q, %v; want live", v, err)
	}
	// Everything the page loaded came from the agent.
	if v, err := evalString(bctx, `performance.getEntriesByType('resource').map(function(e){return e.name}).filter(function(n){return n.indexOf(location.origin + '/') !== 0}).join(' ')`); err != nil || v != "" {
		t.Errorf("requests outside the agent: %q, %v", v, err)
	}

	// Let the change highlight fade before the picture.
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
	}
	screenshot(t, bctx, filepath.Join(shots, "dashboard-after-failover.png"))
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[chromedp.Void](`document.documentElement.setAttribute('data-theme', 'light')`)); err == nil {
		screenshot(t, bctx, filepath.Join(shots, "dashboard-light.png"))
	}
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1920, 1080), chromedp.Navigate(st.url+"/?view=wall"), chromedp.Sleep(1500*time.Millisecond)); err == nil {
		screenshot(t, bctx, filepath.Join(shots, "dashboard-wall.png"))
	} else if !errors.Is(err, context.Canceled) {
		t.Errorf("wall view: %v", err)
	}
	problems.check(t)
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
