package status

import "time"

// HAProxyStatus is one local HAProxy the agent drives through its runtime
// API, at /v1/status under "haproxy".
type HAProxyStatus struct {
	Name       string `json:"name"`
	RuntimeAPI string `json:"runtime_api"`
	// Reachable is whether the runtime API answered the last command.
	Reachable     bool              `json:"reachable"`
	Servers       []HAProxyServer   `json:"servers"`
	Frontends     []HAProxyFrontend `json:"frontends"`
	LastReconcile time.Time         `json:"last_reconcile,omitzero"`
	LastMove      *HAProxyMove      `json:"last_move,omitempty"`
	Reconciles    int               `json:"reconciles"`
	Moves         int               `json:"moves"`
	LastError     string            `json:"last_error,omitempty"`
	LastErrorAt   time.Time         `json:"last_error_at,omitzero"`
}

// HAProxyServer is one managed backend/server compared with the truth.
type HAProxyServer struct {
	Backend    string `json:"backend"`
	Server     string `json:"server"`
	MasterName string `json:"master_name"`
	Addr       string `json:"addr"`           // where HAProxy points it
	Want       string `json:"want,omitempty"` // the Sentinel truth when it differs
	Matches    bool   `json:"matches"`
	Ready      bool   `json:"ready"`   // not in maintenance or drain
	Up         bool   `json:"up"`      // HAProxy's own check holds it up
	Stale      bool   `json:"stale"`   // the truth is not confirmed now
	Missing    bool   `json:"missing"` // HAProxy has no such backend/server
	Why        string `json:"why,omitempty"`
}

// HAProxyFrontend is one frontend and its Consul check.
type HAProxyFrontend struct {
	Name      string `json:"name"`
	Address   string `json:"address,omitempty"`
	ServiceID string `json:"service_id"`
	Status    string `json:"status"` // passing, warning, critical
	Why       string `json:"why"`
}

// HAProxyMove is the last server the agent moved to a new master.
type HAProxyMove struct {
	At     time.Time `json:"at"`
	Server string    `json:"server"` // backend/server
	From   string    `json:"from"`
	To     string    `json:"to"`
	// Reaction runs from the agent learning the new master to the move.
	Reaction time.Duration `json:"reaction_ns"`
}
