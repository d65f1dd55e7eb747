package twemproxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// runResult is what one pipeline run reports to the loop.
type runResult struct {
	start, end time.Time
	noop       bool
	// forced is why the proxy was restarted regardless of the file
	// (start, crash, pending, retry); empty for a rewrite.
	forced  string
	changes []Change
	masters map[string]Master
	wrote   bool
	sha     string // of the desired file
	// runningSHA is the config the proxy runs after the run; set when
	// runningKnown.
	runningSHA   string
	runningKnown bool
	restart      *restartResult
	rollback     *restartResult
	step         string // failed step
	err          error
	proxyDown    bool // no proxy is known to serve after the run
	renderTime   time.Duration
	writeTime    time.Duration
	prestaged    bool // the file written was one Prestage had validated
}

// restartResult is one restart and its probe.
type restartResult struct {
	at       time.Time
	first    time.Time // first pool answered
	last     time.Time // every pool answered
	duration time.Duration
	blackout time.Duration
	step     string
	err      error
}

// pipeline is one run: render, validate and write, restart, probe, and
// roll back when the new file does not serve. It runs in its own goroutine
// and touches no loop state. A non-empty forced restarts the proxy even if
// the file does not change.
func (r *Runner) pipeline(ctx context.Context, forced string) (res runResult) {
	res.start, res.forced = time.Now(), forced
	force := forced != ""
	defer func() { res.end = time.Now() }()
	var cur []byte
	fail := func(step string, err error) runResult {
		res.step, res.err = step, err
		if force {
			// The proxy is not running: serve the file as it is while
			// the new one is retried.
			res.proxyDown = true
			if pools, perr := Pools(cur); cur != nil && perr == nil {
				rs := r.restart(ctx, pools)
				res.restart = &rs
				if rs.err == nil {
					os.Remove(pendingMarker(r.o.ConfigFile))
					res.proxyDown = false
					res.runningSHA, res.runningKnown = sha(cur), true
				}
			}
		}
		return res
	}

	res.masters = r.o.Masters.Masters()
	cur, err := os.ReadFile(r.o.ConfigFile)
	if err != nil && !(errors.Is(err, fs.ErrNotExist) && r.render.TemplateText+r.render.Template != "") {
		return fail("render", fmt.Errorf("read %s: %w", r.o.ConfigFile, err))
	}
	rd, err := renderFrom(r.render, cur, res.masters)
	if err != nil {
		return fail("render", err)
	}
	pools, err := Pools(rd.Desired)
	if err != nil {
		return fail("render", fmt.Errorf("config to write: %w", err))
	}
	res.renderTime = time.Since(res.start)
	res.changes, res.sha = rd.Changes, sha(rd.Desired)
	changed := rd.Changed()
	if !changed && !force {
		res.noop = true
		return res
	}

	marker := pendingMarker(r.o.ConfigFile)
	if changed {
		if step, err := r.writeConfig(ctx, rd.Desired, marker, &res); err != nil {
			return fail(step, err)
		}
	}

	rs := r.restart(ctx, pools)
	res.restart = &rs
	if rs.err == nil {
		os.Remove(marker)
		res.runningSHA, res.runningKnown = res.sha, true
		return res
	}
	res.step, res.err = rs.step, rs.err
	res.runningKnown = true
	if ctx.Err() != nil {
		// Shutting down: the new file was validated and the proxy is
		// being stopped anyway; a rollback now would only lose it.
		res.err = ctx.Err()
		return res
	}
	if !changed || cur == nil {
		res.proxyDown = true
		return res
	}

	r.rollBack(ctx, cur, pools, marker, &res)
	return res
}

// writeConfig writes the desired file after marking the restart pending,
// validating it on the way (unless Prestage did), and returns the failed
// step with the error.
func (r *Runner) writeConfig(ctx context.Context, desired []byte, marker string, res *runResult) (string, error) {
	tw := time.Now()
	defer func() { res.writeTime = time.Since(tw) }()
	// The marker outlives a crash between the rename and the restart, so
	// the next agent knows the proxy runs an older file.
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return "write", fmt.Errorf("mark restart pending: %w", err)
	}
	var checkErr error
	// A file Prestage validated for this promotion is renamed as it is:
	// no write, no --test-conf on the failover's path.
	staged := r.stage.take(desired)
	res.prestaged = staged != ""
	wrote, err := WriteAtomic(r.o.ConfigFile, desired, WriteOptions{
		Backup: true, CrashPoint: r.o.CrashPoint, Staged: staged,
		Check: func(tmp string) error {
			vctx, cancel := context.WithTimeout(ctx, r.o.ValidateTimeout)
			defer cancel()
			checkErr = checkFile(vctx, r.o.NutcrackerBin, tmp, r.o.ConfigFile)
			return checkErr
		},
	})
	if err != nil {
		os.Remove(marker)
		if checkErr != nil {
			return "validate", err
		}
		return "write", err
	}
	res.wrote = wrote
	if wrote {
		r.o.Metrics.ProxyConfigWrites.WithLabelValues(r.o.Name).Inc()
	}
	return "", nil
}

// rollBack restores the previous file cur after the new one did not serve
// and restarts the proxy on it. The old file ran before, so it goes back
// without a check and without touching the backup, which holds it too.
func (r *Runner) rollBack(ctx context.Context, cur []byte, pools []Pool, marker string, res *runResult) {
	if _, err := WriteAtomic(r.o.ConfigFile, cur, WriteOptions{}); err != nil {
		res.err = fmt.Errorf("%w; restoring the previous config failed too: %v", res.err, err)
		res.proxyDown = true
		return
	}
	oldPools, err := Pools(cur)
	if err != nil {
		oldPools = pools
	}
	rb := r.restart(ctx, oldPools)
	res.rollback = &rb
	r.o.Metrics.ProxyRollbacks.WithLabelValues(r.o.Name, res.step).Inc()
	if rb.err != nil {
		res.err = fmt.Errorf("%w; the previous config does not start either: %v", res.err, rb.err)
		res.proxyDown = true
		return
	}
	os.Remove(marker)
	res.runningSHA = sha(cur)
}

// pendingMarker is the file that exists while a rewritten config has not
// been loaded by the proxy yet.
func pendingMarker(path string) string {
	dir, base := filepath.Split(path)
	return filepath.Join(dir, "."+base+".rca-restart-pending")
}

// restart restarts the proxy and probes every pool.
func (r *Runner) restart(ctx context.Context, pools []Pool) (rs restartResult) {
	rs.at = time.Now()
	defer func() {
		result := "ok"
		if rs.err != nil {
			result = "failed"
		} else {
			r.o.Metrics.ProxyRestartDuration.WithLabelValues(r.o.Name).Observe(rs.duration.Seconds())
		}
		r.o.Metrics.ProxyRestarts.WithLabelValues(r.o.Name, result).Inc()
	}()
	if err := r.proxy.Restart(ctx); err != nil {
		rs.step, rs.err = "restart", err
		return rs
	}
	var exited <-chan struct{}
	if r.child != nil {
		exited = r.child.Exited()
	}
	first, last, err := waitPools(ctx, pools, r.o.ProbeTimeout, exited)
	if err != nil {
		if errors.Is(err, errChildExited) {
			err = fmt.Errorf("nutcracker exited while starting (%v): %s", r.child.ExitError(), oneLine(r.child.Output()))
		}
		rs.step, rs.err = "probe", err
		return rs
	}
	rs.first, rs.last = first, last
	rs.duration, rs.blackout = last.Sub(rs.at), first.Sub(rs.at)
	return rs
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "no output"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " / ")
}

// finishRun takes a run's result into the loop state and reports it.
func (r *Runner) finishRun(s *loop, res runResult) {
	s.inFlight = false
	if res.runningKnown {
		s.runningSHA = res.runningSHA
	}
	if res.noop {
		// The file is what the truth wants (it changed back, or
		// another run wrote it): nothing left to retry.
		s.failures, s.lastErr, s.wrongSince = 0, "", time.Time{}
		s.retry.Reset()
		r.mu.Lock()
		r.status.Failures, r.status.WrongSince = 0, time.Time{}
		r.mu.Unlock()
		return
	}
	// Only a run that acted marks a burst; a no-op must not delay the next
	// change.
	s.lastRunEnd = res.end
	// The file the staged ones were rendered from has changed, or the
	// promotion they were staged for is done: a candidate not chosen
	// leaves nothing behind.
	r.stage.discard()
	rs := &RunStatus{At: res.start, DurationMS: ms(res.end.Sub(res.start)), Changes: res.changes, Result: "ok"}

	if res.err != nil && errors.Is(res.err, context.Canceled) {
		r.log.Debug("pipeline interrupted by shutdown", "step", res.step)
	} else if res.err != nil {
		r.runFailed(s, res, rs)
	} else {
		wrongFor := time.Duration(0)
		if !s.wrongSince.IsZero() {
			wrongFor = res.end.Sub(s.wrongSince)
		}
		retries := s.failures
		s.failures, s.lastErr, s.wrongSince = 0, "", time.Time{}
		s.retry.Reset()
		r.reportSuccess(res, retries, wrongFor)
	}
	r.recordRun(s, res, rs)
}

// recordRun takes a run into the status in one critical section, so that a
// reader never sees its restarts counted without its result.
func (r *Runner) recordRun(s *loop, res runResult, rs *RunStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Runs++
	if r.child != nil {
		r.status.PID = r.child.PID()
	}
	if res.restart != nil {
		r.status.Restarts++
		r.status.LastRestart = restartStatus(res.restart, reason(res))
		if res.runningKnown && res.restart.err == nil {
			r.status.RunningSHA256 = res.runningSHA
		}
	}
	if res.rollback != nil {
		r.status.Restarts++
		r.status.Rollbacks++
		r.status.LastRestart = restartStatus(res.rollback, "rollback")
	}
	r.status.LastRun = rs
	r.status.Failures = s.failures
	r.status.WrongSince = s.wrongSince
}

func reason(res runResult) string {
	switch {
	case res.wrote:
		return "rewrite"
	case res.forced != "":
		return res.forced
	default:
		return "restart"
	}
}

func restartStatus(rr *restartResult, why string) *RestartStatus {
	st := &RestartStatus{At: rr.at, DurationMS: ms(rr.duration), BlackoutMS: ms(rr.blackout), Result: "ok", Reason: why}
	if rr.err != nil {
		st.Result, st.Error = "failed", rr.err.Error()
	}
	return st
}

// reportSuccess records reaction times, marks the failovers applied and logs
// the figures an operator tunes against.
func (r *Runner) reportSuccess(res runResult, retries int, wrongFor time.Duration) {
	rr := res.restart
	if rr == nil {
		return
	}
	var worst time.Duration
	done := map[string]bool{}
	for _, c := range res.changes {
		m, ok := res.masters[c.Name]
		if !ok || done[c.Name] {
			continue
		}
		done[c.Name] = true
		if !m.Since.IsZero() && !m.Stale {
			d := rr.last.Sub(m.Since)
			worst = max(worst, d)
			r.o.Metrics.Reaction.WithLabelValues("twemproxy").Observe(d.Seconds())
		}
		r.o.Journal.AppliedTwemproxy(c.Name, m.Addr, rr.last)
	}
	detail := fmt.Sprintf("restart %s, blackout %s", rr.duration.Round(10*time.Microsecond), rr.blackout.Round(10*time.Microsecond))
	if len(res.changes) > 0 {
		detail = describe(res.changes) + "; " + detail
	}
	if res.prestaged {
		// Says that this failover's path ran no nutcracker --test-conf.
		detail += "; the config staged and validated before the promotion was used"
	}
	if retries > 0 {
		detail += fmt.Sprintf("; after %d failed runs", retries)
	}
	if wrongFor > 0 {
		detail += fmt.Sprintf("; the proxy disagreed with Sentinel for %s", wrongFor.Round(time.Millisecond))
	}
	r.o.Journal.Add(telemetry.Event{Kind: telemetry.KindTwemproxy, Type: reason(res), Subject: r.o.Name, Detail: detail})
	r.log.Info("config applied", "reason", reason(res), "changes", describe(res.changes), "failed_runs", retries, "wrong_for", wrongFor,
		"restart", rr.duration, "blackout", rr.blackout, "reaction", worst,
		"render", res.renderTime, "validate_write", res.writeTime, "prestaged", res.prestaged, "run", res.end.Sub(res.start))
}
