package config

import (
	"strings"
	"testing"
	"time"
)

func TestHAProxyDefaults(t *testing.T) {
	c, probs := Parse([]byte(`
sentinel: {addresses: [127.0.0.1:26379]}
haproxy:
  - name: edge
    runtime_api: /run/haproxy/admin.sock
    servers:
      - {backend: redis-rw, server: mymaster, master_name: mymaster}
`))
	if probs != nil {
		t.Fatal(probs)
	}
	if p := c.Finish(); len(p) > 0 {
		t.Fatal(p)
	}
	h := c.HAProxy[0]
	if h.Service != "haproxy" || h.Timeout.D() != time.Second || h.Reconcile.D() != 5*time.Second {
		t.Errorf("defaults: %+v", h)
	}
	if got := c.HAProxyServices(); len(got) != 1 || got[0] != "haproxy" {
		t.Errorf("services %v", got)
	}
}

func TestHAProxyProblems(t *testing.T) {
	c, probs := Parse([]byte(`
haproxy:
  - name: edge
    runtime_api: run/admin.sock
    service: HAProxy
    servers:
      - {backend: "redis rw", server: mymaster}
      - {backend: b, server: s, master_name: m}
      - {backend: b, server: s, master_name: m}
    frontends:
      - {name: rw, address: nope, backends: [c]}
  - name: edge
    runtime_api: localhost
`))
	if probs != nil {
		t.Fatal(probs)
	}
	got := c.Finish().Error()
	for _, want := range []string{
		`haproxy[0].runtime_api: "run/admin.sock": a socket path must be absolute`,
		`haproxy[0].service: "HAProxy"`,
		`haproxy[0].servers[0].backend: "redis rw": HAProxy names use`,
		`haproxy[0].servers[0].master_name: missing`,
		`haproxy[0].servers[2]: b/s listed twice`,
		`haproxy[0].frontends[0].address: "nope"`,
		`haproxy[0].frontends[0].backends[0]: "c": no server of this entry is in that backend`,
		`haproxy[1].name: "edge" used twice`,
		`haproxy[1].runtime_api: "localhost": want host:port`,
		`haproxy[1].servers: missing`,
		`sentinel: no addresses`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
}

func TestHAProxyUnknownKey(t *testing.T) {
	_, probs := Parse([]byte("haproxy:\n  - name: edge\n    socket: /x\n"))
	if len(probs) != 1 || !strings.Contains(probs[0], `unknown key "socket" in a haproxy entry`) {
		t.Fatalf("got %v", probs)
	}
}
