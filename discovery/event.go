package discovery

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// Channels is the list of Sentinel pub/sub channels the Monitor subscribes
// to: the failover sequence and the instance state changes worth a journal
// line. A fixed list (rather than PSUBSCRIBE *) keeps the metric label set
// bounded.
var Channels = []string{
	"+switch-master",
	"+sdown", "-sdown", "+odown", "-odown",
	"+try-failover", "+elected-leader", "+failover-state-select-slave",
	"+selected-slave", "+promoted-slave", "+failover-state-reconf-slaves",
	"+failover-end", "+failover-end-for-timeout",
	"+failover-state-send-slaveof-noone", "+failover-state-wait-promotion",
	"-failover-abort-not-elected", "-failover-abort-no-good-slave", "-failover-abort-slave-timeout",
	"+convert-to-slave", "+role-change", "+slave-reconf-done",
	"+config-update-from", "+reset-master", "+monitor", "-monitor",
	"+new-epoch", "+tilt", "-tilt",
}

// Event is one parsed Sentinel pub/sub message.
//
// Sentinel formats most messages as
// "<instance-type> <name> <ip> <port> [@ <master-name> <master-ip> <master-port>] [extra]".
// For such events Instance* describe the instance and Master* the master it
// belongs to (for a master instance, the instance itself). +switch-master is
// "<name> <old-ip> <old-port> <new-ip> <new-port>": MasterAddr is the new
// address and OldMasterAddr the old one.
type Event struct {
	Type          string // the channel, e.g. "+switch-master"
	InstanceType  string // master, slave, replica or sentinel; empty for +switch-master and global events
	InstanceName  string // mymaster, 10.0.0.6:6379, or a Sentinel run ID
	InstanceAddr  string // host:port of the instance
	MasterName    string // the master name the event concerns, if any
	MasterAddr    string // host:port of that master (the new one for +switch-master)
	OldMasterAddr string // +switch-master only
	Extra         string // the rest of the message (e.g. "#quorum 2/2"), single-spaced
}

// Errors returned by ParseEvent; the returned error wraps one of them.
var (
	ErrEmptyEvent     = errors.New("empty sentinel message")
	ErrMalformedEvent = errors.New("malformed sentinel message")
)

// eventsWithoutInstance are the channels whose payload is free text rather
// than the instance format.
var eventsWithoutInstance = map[string]bool{
	"+new-epoch":       true,
	"+vote-for-leader": true,
	"+tilt":            true,
	"-tilt":            true,
}

// ParseEvent parses a message received on a Sentinel channel. The error
// names the channel, the payload and what is wrong with it, so a bad
// message can be reported and skipped without guessing.
func ParseEvent(channel, payload string) (Event, error) {
	channel = strings.TrimSpace(channel)
	if channel == "" || strings.ContainsAny(channel, " \t\r\n") {
		return Event{}, fmt.Errorf("sentinel channel %q: %w", channel, ErrMalformedEvent)
	}
	e := Event{Type: channel}
	f := strings.Fields(payload)
	bad := func(why string) (Event, error) {
		return Event{}, fmt.Errorf("%s %q: %s: %w", channel, payload, why, ErrMalformedEvent)
	}
	switch {
	case channel == "+switch-master":
		if len(f) != 5 {
			return bad(fmt.Sprintf("want <name> <old-ip> <old-port> <new-ip> <new-port>, got %d fields", len(f)))
		}
		old, err := addr.Join(f[1], f[2])
		if err != nil {
			return bad("old address: " + err.Error())
		}
		nu, err := addr.Join(f[3], f[4])
		if err != nil {
			return bad("new address: " + err.Error())
		}
		e.MasterName, e.OldMasterAddr, e.MasterAddr = f[0], old, nu
		return e, nil
	case eventsWithoutInstance[channel]:
		e.Extra = strings.Join(f, " ")
		return e, nil
	}
	if len(f) == 0 {
		return Event{}, fmt.Errorf("%s: %w", channel, ErrEmptyEvent)
	}
	if len(f) < 4 {
		return bad(fmt.Sprintf("want <instance-type> <name> <ip> <port>, got %d fields", len(f)))
	}
	switch f[0] {
	case "master", "slave", "replica", "sentinel":
	default:
		return bad(fmt.Sprintf("unknown instance type %q", f[0]))
	}
	iaddr, err := addr.Join(f[2], f[3])
	if err != nil {
		return bad("instance address: " + err.Error())
	}
	e.InstanceType, e.InstanceName, e.InstanceAddr = f[0], f[1], iaddr
	rest := f[4:]
	if len(rest) > 0 && rest[0] == "@" {
		if len(rest) < 4 {
			return bad("want @ <master-name> <master-ip> <master-port>")
		}
		maddr, err := addr.Join(rest[2], rest[3])
		if err != nil {
			return bad("master address: " + err.Error())
		}
		e.MasterName, e.MasterAddr = rest[1], maddr
		rest = rest[4:]
	} else if e.InstanceType == "master" {
		e.MasterName, e.MasterAddr = e.InstanceName, e.InstanceAddr
	}
	e.Extra = strings.Join(rest, " ")
	return e, nil
}

// Payload renders the event back in Sentinel's format, single-spaced.
// ParseEvent(e.Type, e.Payload()) returns e.
func (e Event) Payload() string {
	hp := func(a string) string {
		h, p, _ := net.SplitHostPort(a)
		return h + " " + p
	}
	var parts []string
	switch {
	case e.Type == "+switch-master":
		return e.MasterName + " " + hp(e.OldMasterAddr) + " " + hp(e.MasterAddr)
	case e.InstanceType == "":
		return e.Extra
	}
	parts = append(parts, e.InstanceType, e.InstanceName, hp(e.InstanceAddr))
	if e.MasterName != "" && (e.InstanceType != "master" || e.MasterName != e.InstanceName || e.MasterAddr != e.InstanceAddr) {
		parts = append(parts, "@", e.MasterName, hp(e.MasterAddr))
	}
	if e.Extra != "" {
		parts = append(parts, e.Extra)
	}
	return strings.Join(parts, " ")
}

// String is the channel and payload, for logs and the journal.
func (e Event) String() string { return e.Type + " " + e.Payload() }
