package haproxy

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ServerState is one line of `show servers state`: the fields the driver
// decides on.
type ServerState struct {
	Backend string
	Server  string
	// Addr is the server's address as HAProxy connects to it (host:port).
	Addr string
	// OpState is HAProxy's operational state: OpStopped, OpStarting,
	// OpRunning or OpStopping.
	OpState int
	// Admin is the administrative state, a bit field (AdminForcedMaint...).
	Admin int
	// CheckState is the health check's state bits; CheckEnabled is set
	// while HAProxy checks the server itself.
	CheckState int
}

// Operational states of a server (srv_op_state).
const (
	OpStopped  = 0
	OpStarting = 1
	OpRunning  = 2
	OpStopping = 3
)

// Administrative state bits (srv_admin_state).
const (
	AdminForcedMaint     = 0x01 // set server state maint
	AdminInheritedMaint  = 0x02 // tracks a server in maintenance
	AdminConfigMaint     = 0x04 // `disabled` in the config
	AdminForcedDrain     = 0x08 // set server state drain
	AdminInheritedDrain  = 0x10
	AdminResolutionMaint = 0x20 // DNS resolution failed
	AdminHostnameMaint   = 0x40
)

// CheckEnabled is the srv_check_state bit of a server HAProxy checks.
const CheckEnabled = 0x04

// Ready reports whether the server takes new traffic as far as its
// administrative state goes: no maintenance and no drain of any origin.
func (s ServerState) Ready() bool { return s.Admin == 0 }

// settable are the administrative bits `set server state ready` clears
// (`disabled` in the config sets FMAINT with CMAINT); the others come from a
// tracked server or DNS resolution and are not the agent's to change.
const settable = AdminForcedMaint | AdminConfigMaint | AdminForcedDrain

// Settable reports whether `set server state ready` would make it ready.
func (s ServerState) Settable() bool { return s.Admin&^settable == 0 }

// Up reports whether HAProxy's own check holds the server up.
func (s ServerState) Up() bool { return s.OpState == OpRunning || s.OpState == OpStarting }

// Checked reports whether HAProxy runs health checks on the server.
func (s ServerState) Checked() bool { return s.CheckState&CheckEnabled != 0 }

// columns the parser needs, by their names in the header line.
var stateColumns = []string{"be_name", "srv_name", "srv_addr", "srv_port", "srv_op_state", "srv_admin_state", "srv_check_state"}

// ParseServersState parses the answer to `show servers state`: a version
// line ("1"), a header line naming the columns ("# be_id be_name ..."), then
// one line per server. Columns are found by name, so a HAProxy that adds
// some still parses; a missing one is an error, as is any answer that is not
// this format (HAProxy answers errors in words).
func ParseServersState(out string) ([]ServerState, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "1" {
		return nil, fmt.Errorf("not a version 1 servers state: %q", firstLine(out))
	}
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "#") {
		return nil, fmt.Errorf("servers state without a header line")
	}
	idx := map[string]int{}
	for i, name := range strings.Fields(strings.TrimPrefix(lines[1], "#")) {
		idx[name] = i
	}
	for _, c := range stateColumns {
		if _, ok := idx[c]; !ok {
			return nil, fmt.Errorf("servers state header lacks column %s", c)
		}
	}
	var out2 []ServerState
	for n, line := range lines[2:] {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < len(idx) {
			return nil, fmt.Errorf("servers state line %d: %d fields, the header names %d", n+3, len(f), len(idx))
		}
		s, err := parseStateLine(f, idx)
		if err != nil {
			return nil, fmt.Errorf("servers state line %d: %w", n+3, err)
		}
		out2 = append(out2, s)
	}
	return out2, nil
}

func parseStateLine(f []string, idx map[string]int) (ServerState, error) {
	num := func(col string) (int, error) {
		v, err := strconv.Atoi(f[idx[col]])
		if err != nil {
			return 0, fmt.Errorf("%s %q is not a number", col, f[idx[col]])
		}
		return v, nil
	}
	s := ServerState{Backend: f[idx["be_name"]], Server: f[idx["srv_name"]]}
	port, err := num("srv_port")
	if err != nil {
		return s, err
	}
	s.Addr = net.JoinHostPort(f[idx["srv_addr"]], strconv.Itoa(port))
	if s.OpState, err = num("srv_op_state"); err != nil {
		return s, err
	}
	if s.Admin, err = num("srv_admin_state"); err != nil {
		return s, err
	}
	if s.CheckState, err = num("srv_check_state"); err != nil {
		return s, err
	}
	return s, nil
}
