package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// explain turns a Consul error into one that says what was being done and,
// for an ACL denial, which right is probably missing.
func (r *Registrar) explain(op string, s Service, err error) error {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		return fmt.Errorf("%s %s: consul denied the request (ACL token lacks service:write on %q?): %w", op, s.ID, s.Name, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: consul did not answer within %s: %w", op, s.ID, r.opts.WriteTimeout, err)
	}
	return fmt.Errorf("%s %s: %w", op, s.ID, err)
}

// isNotFound reports whether err says the service or check is unknown to
// the Consul agent.
func isNotFound(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusNotFound || strings.Contains(strings.ToLower(se.Body), "unknown check") ||
			strings.Contains(se.Body, "does not have associated TTL")
	}
	return false
}

// noteResult logs a failure once per distinct error and a recovery once,
// and keeps the error and its time for the status API. Caller holds e.mu.
func (r *Registrar) noteResult(e *entry, err error) {
	switch {
	case err != nil && (e.retry.lastErr == nil || e.retry.lastErr.Error() != err.Error()):
		r.log.Error("consul write failed", "service_id", e.want.svc.ID, "error", err)
		r.opts.Journal.Add(telemetry.Event{
			Kind: telemetry.KindConsul, Type: "error", Subject: e.want.svc.ID, Detail: err.Error(), Level: "error",
		})
	case err == nil && e.retry.lastErr != nil:
		r.log.Info("consul write recovered", "service_id", e.want.svc.ID)
	}
	if err != nil {
		e.retry.lastErrAt = time.Now()
	}
	e.retry.lastErr = err
}
