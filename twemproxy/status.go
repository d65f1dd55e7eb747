package twemproxy

import (
	"slices"
	"time"
)

// Status is a snapshot of one managed twemproxy for the status API, the
// dashboard and the status command.
type Status struct {
	Name       string
	ConfigFile string
	Mode       string // supervise, command or custom
	// ConfigSHA256 identifies the file on disk; RunningSHA256 the config the
	// proxy was last (re)started with, empty when unknown. They differ while
	// a restart is pending or after one failed.
	ConfigSHA256  string
	RunningSHA256 string
	PID           int
	Pools         []PoolStatus
	// Pending is true while a change waits for quiescence or a retry.
	Pending     bool
	LastRun     *RunStatus
	LastRestart *RestartStatus
	LastError   string
	LastErrorAt time.Time
	// Failures counts the failed runs since the last one that succeeded;
	// each is retried (see Options.UrgentRetry).
	Failures int
	// WrongSince is when the truth moved a server that the proxy still
	// uses because a rewrite failed; zero while the proxy agrees with
	// Sentinel. An operator reads how long clients have been sent to an
	// old master from it.
	WrongSince time.Time
	Runs       int
	Restarts   int
	Rollbacks  int
}

// PoolStatus is one pool and its Consul check.
type PoolStatus struct {
	Name      string
	Listen    string
	ServiceID string
	Health    string // passing, warning, critical
	Output    string
	Servers   []ServerStatus
	// WrongSince is when the agent learnt the earliest master address
	// that the pool does not use yet; zero while every server matches.
	WrongSince time.Time
}

// ServerStatus is one server of a pool compared with the Sentinel truth.
type ServerStatus struct {
	Name   string
	Addr   string
	Weight int
	// Truth is the Sentinel master address for Name; empty when the name
	// is not a master the agent knows, and then the server is not managed.
	Truth   string
	Matches bool
}

// RunStatus describes the last pipeline run that did something.
type RunStatus struct {
	At         time.Time
	DurationMS float64
	// Result is ok, failed or rolled-back.
	Result  string
	Step    string // the failed step
	Changes []Change
	Error   string
}

// RestartStatus describes the last restart of the proxy.
type RestartStatus struct {
	At time.Time
	// DurationMS runs from the restart call until every pool answered.
	DurationMS float64
	// BlackoutMS runs from the restart call until the first pool answered:
	// an upper bound of the time the listener refused connections.
	BlackoutMS float64
	Result     string // ok or failed
	Reason     string // rewrite, start, crash, pending, retry, rollback
	Error      string
}

func (s Status) clone() Status {
	c := s
	c.Pools = slices.Clone(s.Pools)
	for i := range c.Pools {
		c.Pools[i].Servers = slices.Clone(c.Pools[i].Servers)
	}
	if s.LastRun != nil {
		lr := *s.LastRun
		lr.Changes = slices.Clone(lr.Changes)
		c.LastRun = &lr
	}
	if s.LastRestart != nil {
		lr := *s.LastRestart
		c.LastRestart = &lr
	}
	return c
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
