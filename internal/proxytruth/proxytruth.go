// Package proxytruth is the Sentinel truth as the proxy drivers follow it:
// the twemproxy runner and the HAProxy driver take the same Master and the
// same Source, which the agent adapts from the discovery Monitor, so that
// both proxies follow the truth Consul gets, with the same split-brain rules.
package proxytruth

import "time"

// Master is one master name's truth.
type Master struct {
	Addr  string    // host:port as the Sentinels name it, IPv6 in brackets
	Since time.Time // when the agent learnt this address; zero if unknown
	// Stale marks a last known address that the Sentinels could not
	// confirm lately (none reachable, no majority). A driver never acts on
	// it: an old master that returns still claiming master must get no
	// traffic. A source must still list stale masters rather than drop
	// them, or a twemproxy template would render a pool without that shard.
	Stale bool
}

// Source is the truth a driver follows: the current masters, and a
// notification whenever they change.
type Source interface {
	// Masters returns the truth by master name, including the last known
	// address of names the Sentinels cannot confirm now (flagged Stale).
	// The caller does not modify the map.
	Masters() map[string]Master
	// Subscribe returns a channel that receives (coalesced) whenever the
	// truth changes, and a function that ends the subscription.
	Subscribe() (<-chan struct{}, func())
}
