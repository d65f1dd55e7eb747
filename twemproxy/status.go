package twemproxy

import (
	"slices"
	"time"
)

// Status is a snapshot of one managed twemproxy for the status API, the
// dashboard and the status command.
type Status struct {
	Name       string `json:"name"`
	ConfigFile string `json:"config_file"`
	Mode       string `json:"mode"` // supervise, command or custom
	// ConfigSHA256 identifies the file on disk; RunningSHA256 the config the
	// proxy was last (re)started with, empty when unknown. They differ while
	// a restart is pending or after one failed.
	ConfigSHA256  string       `json:"config_sha256"`
	RunningSHA256 string       `json:"running_sha256,omitempty"`
	PID           int          `json:"pid,omitempty"`
	Pools         []PoolStatus `json:"pools"`
	// Pending is true while a change waits for quiescence or a retry.
	Pending     bool           `json:"pending"`
	LastRun     *RunStatus     `json:"last_run,omitempty"`
	LastRestart *RestartStatus `json:"last_restart,omitempty"`
	LastError   string         `json:"last_error,omitempty"`
	LastErrorAt time.Time      `json:"last_error_at,omitzero"`
	// Failures counts the failed runs since the last one that succeeded;
	// each is retried (see Options.UrgentRetry).
	Failures int `json:"failures"`
	// WrongSince is when the truth moved a server that the proxy still
	// uses because a rewrite failed; zero while the proxy agrees with
	// Sentinel. An operator reads how long clients have been sent to an
	// old master from it.
	WrongSince time.Time `json:"wrong_since,omitzero"`
	Runs       int       `json:"runs"`
	Restarts   int       `json:"restarts"`
	Rollbacks  int       `json:"rollbacks"`
}

// PoolStatus is one pool and its Consul check.
type PoolStatus struct {
	Name      string         `json:"name"`
	Listen    string         `json:"listen"`
	ServiceID string         `json:"service_id,omitempty"`
	Health    string         `json:"health"` // passing, warning, critical
	Output    string         `json:"output"`
	Servers   []ServerStatus `json:"servers"`
	// WrongSince is when the agent learnt the earliest master address
	// that the pool does not use yet; zero while every server matches.
	WrongSince time.Time `json:"wrong_since,omitzero"`
}

// ServerStatus is one server of a pool compared with the Sentinel truth.
type ServerStatus struct {
	Name   string `json:"name,omitempty"`
	Addr   string `json:"addr"`
	Weight int    `json:"weight"`
	// Truth is the Sentinel master address for Name; empty when the name
	// is not a master the agent knows, and then the server is not managed.
	Truth   string `json:"truth,omitempty"`
	Matches bool   `json:"matches"`
}

// RunStatus describes the last pipeline run that did something.
type RunStatus struct {
	At         time.Time `json:"at"`
	DurationMS float64   `json:"duration_ms"`
	// Result is ok, failed or rolled-back.
	Result  string   `json:"result"`
	Step    string   `json:"step,omitempty"` // the failed step
	Changes []Change `json:"changes,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// RestartStatus describes the last restart of the proxy.
type RestartStatus struct {
	At time.Time `json:"at"`
	// DurationMS runs from the restart call until every pool answered.
	DurationMS float64 `json:"duration_ms"`
	// BlackoutMS runs from the restart call until the first pool answered:
	// an upper bound of the time the listener refused connections.
	BlackoutMS float64 `json:"blackout_ms"`
	Result     string  `json:"result"` // ok or failed
	Reason     string  `json:"reason"` // rewrite, start, crash, pending, retry, rollback
	Error      string  `json:"error,omitempty"`
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
