package haproxy

import (
	"context"
)

// Registry is where the frontends are registered in Consul. The agent
// adapts the discovery Registrar, which writes only what changed and keeps
// the TTLs alive.
type Registry interface {
	// Update makes Consul hold svc with its check at h; it is called after
	// every reconcile, so it must write only what changed.
	Update(ctx context.Context, svc Service, h Health) error
	// Remove deregisters a frontend, on removal and on shutdown.
	Remove(ctx context.Context, id string) error
}

// Service is a frontend's Consul service definition.
type Service struct {
	ID      string
	Name    string
	Tags    []string
	Meta    map[string]string
	Address string
	Port    int
}

// Health is the state of a frontend's TTL check.
type Health struct {
	Status string // HealthPassing, HealthWarning or HealthCritical
	Output string
}

// Check statuses, as Consul spells them.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
)
