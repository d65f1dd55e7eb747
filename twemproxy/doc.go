// Package twemproxy keeps twemproxy (nutcracker) pointed at the current Redis
// masters: render, validate, write, restart, probe, roll back.
//
// A Runner watches a MasterSource (the Sentinel truth). When the truth
// changes it computes the desired config file, either by editing the current
// file in place (Edit: only the host:port of servers named after a master
// changes, every other byte is kept) or by rendering a Go template. If the
// bytes differ it validates them with `nutcracker --test-conf`, keeps a
// backup, writes atomically, restarts the proxy (Supervisor runs nutcracker as
// a child; CommandRestarter runs an operator command) and probes every pool
// with PING. A failed probe restores the backup and restarts again, loudly.
// One pipeline runs at a time and a burst of changes coalesces into few runs.
// A run that fails before touching the proxy (a full disk, a rejected file)
// while the proxy still sends a shard to a moved master is retried at a short
// fixed interval until it succeeds; other failures back off.
//
// Each pool is registered in Consul through a consulreg.Registry (the
// discovery Registrar) with a TTL check that passes only while the pool
// answers PING and its servers match the truth.
package twemproxy
