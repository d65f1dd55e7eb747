// Package haproxy keeps HAProxy's Redis servers pointed at the current
// masters through HAProxy's runtime API, with no reload.
//
// A Driver follows the Sentinel truth (a Truth). On every change, on start,
// after the runtime API comes back and on a slow tick it reads `show servers
// state`, decides with Plan what differs from the truth, and for each server
// that points elsewhere sends `set server B/S addr IP port P`, makes it
// ready (and forces its health up when HAProxy's own check still holds the
// old address down), then `shutdown sessions server B/S`, so that clients
// still connected to the old master reconnect to the new one. Other backends
// and their connections are untouched. A stale truth is never acted on: a
// returning old master that still claims master gets no traffic.
//
// Each managed frontend is registered in Consul through a
// consulreg.Registry (the discovery Registrar) with a TTL check that passes
// only while HAProxy's servers match the truth.
package haproxy
