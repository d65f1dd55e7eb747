// Package consulreg is what a registration is, shared by the one writer to
// Consul (discovery.Registrar) and the components that hand it their
// desired state (the Redis and Sentinel runners, the twemproxy runner, the
// HAProxy driver): a service definition, the state of its TTL check, and
// the Registry they write through. The names that go into a Service live in
// internal/consulname; how one is written to Consul lives in discovery.
package consulreg

import "context"

// Service is the definition of one service the agent registers. Everything
// in it is slow-changing: a change is a registration write that Consul syncs
// to its servers, so fast-changing facts belong in Health.Output.
type Service struct {
	ID      string
	Name    string
	Tags    []string
	Meta    map[string]string
	Address string
	Port    int
}

// Health is the state of a service's TTL check.
type Health struct {
	Status string // Passing, Warning or Critical
	Output string // why, for operators
}

// Check statuses, as Consul spells them (api.HealthPassing and so on; this
// package does not import the Consul client).
const (
	Passing  = "passing"
	Warning  = "warning"
	Critical = "critical"
)

// Registry is where a component registers its services in Consul. The
// discovery Registrar is the one implementation; tests use fakes.
type Registry interface {
	// Update makes Consul hold svc with its check at h. It is called on
	// every check of the caller, so it writes only what changed.
	Update(ctx context.Context, svc Service, h Health) error
	// Remove deregisters a service that is gone, and each of the
	// caller's services on shutdown.
	Remove(ctx context.Context, id string) error
}
