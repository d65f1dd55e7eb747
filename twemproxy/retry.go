package twemproxy

import (
	"fmt"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/backoff"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// logEvery is how often an error repeated by the urgent retries is logged
// at error level again: once per change of the error, then every logEvery
// attempts, so a full disk does not write two error lines a second.
const logEvery = 20

// runFailed schedules the retry of a failed run and reports the failure.
//
// The retry interval depends on what the failure costs the clients. A run
// that failed before it touched the proxy (render, write, validate) while
// the truth has moved a server the proxy still uses leaves clients sending
// a shard to a master that is gone: it is retried every UrgentRetry for as
// long as that lasts, since the attempt is cheap (no restart) and the
// moment the cause clears (space freed, a template fixed) is the moment the
// switch should be applied. Any other failure backs off exponentially up to
// RetryMax: a failed restart or probe costs a blackout per attempt, and a
// failure that moves no server has no emergency to answer.
func (r *Runner) runFailed(s *loop, res runResult, rs *RunStatus) {
	s.failures++
	s.dirty = true
	wrong := len(res.changes) > 0
	urgent := wrong && res.restart == nil && !res.proxyDown
	if wrong && s.wrongSince.IsZero() {
		s.wrongSince = wrongSince(res)
	}
	var delay time.Duration
	if urgent {
		// Jittered like every retry (UrgentRetry/2 to UrgentRetry), but
		// never growing.
		b := backoff.Backoff{Min: r.o.UrgentRetry, Max: r.o.UrgentRetry}
		delay = b.Next()
	} else {
		delay = s.retry.Next()
	}
	s.notBefore = time.Now().Add(delay)
	if res.proxyDown {
		// No proxy is known to serve: the retry restarts it even if the
		// file then looks current.
		s.force, s.why = true, "retry"
		s.runningSHA = ""
	}
	rs.Result, rs.Step, rs.Error = "failed", res.step, res.err.Error()
	if res.rollback != nil && res.rollback.err == nil {
		rs.Result = "rolled-back"
	}
	r.o.Metrics.ProxyPipelineFailures.WithLabelValues(r.o.Name, res.step).Inc()
	msg := fmt.Sprintf("%s failed: %v", res.step, res.err)
	repeated := msg == s.lastErr
	r.noteError(s, msg)
	args := []any{"step", res.step, "error", res.err, "changes", describe(res.changes),
		"rolled_back", rs.Result == "rolled-back", "proxy_down", res.proxyDown,
		"failed_runs", s.failures, "urgent", urgent, "retry_in", delay.Round(time.Millisecond)}
	if !s.wrongSince.IsZero() {
		args = append(args, "wrong_for", time.Since(s.wrongSince).Round(time.Millisecond))
	}
	if repeated && s.failures%logEvery != 0 {
		r.log.Debug("pipeline failed again", args...)
		return
	}
	r.log.Error("pipeline failed", args...)
	typ := "failure"
	if res.rollback != nil {
		typ = "rollback"
	}
	r.o.Journal.Add(telemetry.Event{Kind: telemetry.KindTwemproxy, Type: typ, Subject: r.o.Name, Detail: msg, Level: "error"})
}

// wrongSince is when the proxy started to disagree with the truth: when the
// agent learnt the earliest of the addresses the failed run would have
// applied, or the run's start when the source does not say.
func wrongSince(res runResult) time.Time {
	var at time.Time
	for _, c := range res.changes {
		m, ok := res.masters[c.Name]
		if ok && !m.Since.IsZero() && (at.IsZero() || m.Since.Before(at)) {
			at = m.Since
		}
	}
	if at.IsZero() || at.After(res.start) {
		return res.start
	}
	return at
}
