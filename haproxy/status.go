package haproxy

import (
	"slices"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// Status is a snapshot of one driven HAProxy for the status API and the
// status command; agent/status turns it into JSON.
type Status struct {
	Name       string
	RuntimeAPI string
	// Reachable is whether the runtime API answered the last command.
	Reachable bool
	Servers   []Verdict
	Frontends []FrontendStatus
	// LastReconcile is when `show servers state` was last read.
	LastReconcile time.Time
	LastMove      *MoveStatus
	LastError     string
	LastErrorAt   time.Time
	Reconciles    int
	Moves         int
}

// FrontendStatus is one frontend and its Consul check.
type FrontendStatus struct {
	Name      string
	Address   string
	ServiceID string
	Health    consulreg.Health
}

// MoveStatus is the last server the driver moved.
type MoveStatus struct {
	At       time.Time
	Server   string // backend/server
	From, To string
	// Reaction runs from the agent learning To to the move being done.
	Reaction time.Duration
}

func (s Status) clone() Status {
	c := s
	c.Servers = slices.Clone(s.Servers)
	c.Frontends = slices.Clone(s.Frontends)
	if s.LastMove != nil {
		m := *s.LastMove
		c.LastMove = &m
	}
	return c
}
