package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) string { return "" }

func TestLoadValid(t *testing.T) {
	dir := t.TempDir()
	tok := writeFile(t, dir, "token", "s3cret\n")
	rpw := writeFile(t, dir, "redis.pass", "r3dis\n")
	cfg := writeFile(t, dir, "agent.yml", `
node_name: cache-1
consul:
  address: 127.0.0.1:8500
  token_file: `+tok+`
sentinel:
  addresses: [127.0.0.1:26379]
  redis_auth: {username: confirmer, password_file: `+rpw+`}
redis:
  - address: 127.0.0.1:6379
    master_name: mymaster
twemproxy:
  - name: main
    config_file: `+filepath.Join(dir, "nutcracker.yml")+`
    wait: {min: 50ms}
timing:
  tick: 500ms
`)
	c, err := Load(cfg, noEnv, Overrides{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Consul.Token != "s3cret" {
		t.Errorf("token = %q, want it read from token_file", c.Consul.Token)
	}
	if ra := c.Sentinel.RedisAuth; ra.Username != "confirmer" || ra.Password != "r3dis" {
		t.Errorf("sentinel.redis_auth = user %q password set %v, want confirmer and the file's password", ra.Username, ra.Password != "")
	}
	r := c.Redis[0]
	if r.Announce != "127.0.0.1:6379" || r.Service != "redis" {
		t.Errorf("redis defaults: announce %q service %q", r.Announce, r.Service)
	}
	tw := c.Twemproxy[0]
	if tw.Restart.Mode != RestartSupervise || tw.Service != "twemproxy" || tw.Wait.Max.D() != 200*time.Millisecond {
		t.Errorf("twemproxy defaults: %+v", tw)
	}
	if f := c.Failover; f.ActOn != ActOnPromotion || !f.PauseWrites || f.PauseSlice.D() != 300*time.Millisecond {
		t.Errorf("failover defaults: %+v, want promotion, pause_writes true, 300ms slices", f)
	}
	off := writeFile(t, dir, "off.yml", "sentinel: {addresses: [127.0.0.1:2]}\nredis: [{address: 127.0.0.1:1, master_name: m}]\nfailover: {act_on: announcement, pause_writes: false}\n")
	if c, err := Load(off, noEnv, Overrides{}); err != nil || c.Failover.ActOn != ActOnAnnouncement || c.Failover.PauseWrites {
		t.Errorf("failover: {act_on: announcement, pause_writes: false} = %+v, %v", c.Failover, err)
	}
	if c.Timing.Tick.D() != 500*time.Millisecond || c.HTTP.Address != "127.0.0.1:8765" {
		t.Errorf("timing/http: %+v %+v", c.Timing, c.HTTP)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "agent.yml", `
node_name: from-file
consul: {address: 127.0.0.1:1111}
http: {address: 127.0.0.1:2222}
sentinel: {addresses: [127.0.0.1:26379]}
redis: [{address: 127.0.0.1:6379, master_name: m}]
`)
	env := map[string]string{"CONSUL_HTTP_ADDR": "127.0.0.1:3333", "RCA_NODE_NAME": "from-env", "CONSUL_HTTP_TOKEN": "envtoken"}
	c, err := Load(cfg, func(k string) string { return env[k] }, Overrides{NodeName: "from-flag"})
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "from-flag" {
		t.Errorf("node_name = %q, want the flag to win", c.NodeName)
	}
	if c.Consul.Address != "127.0.0.1:3333" {
		t.Errorf("consul.address = %q, want env to beat the file", c.Consul.Address)
	}
	if c.HTTP.Address != "127.0.0.1:2222" {
		t.Errorf("http.address = %q, want the file to beat the default", c.HTTP.Address)
	}
	if c.Consul.Token != "envtoken" {
		t.Errorf("token from CONSUL_HTTP_TOKEN not used")
	}
}

func TestProblems(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // substrings, each must appear in some problem
	}{
		{"unknown key", "bogus: 1\nredis: [{address: 127.0.0.1:1, master_name: m}]\nsentinel: {addresses: [127.0.0.1:2]}", []string{`unknown key "bogus" in the top level`}},
		{"bad duration", "timing: {tick: soon}\nredis: [{address: 127.0.0.1:1, master_name: m}]\nsentinel: {addresses: [127.0.0.1:2]}", []string{`"soon" is not a duration`}},
		{"bad address", "redis: [{address: nohost, master_name: m}]\nsentinel: {addresses: [127.0.0.1:2]}", []string{`redis[0].address: "nohost": want host:port`}},
		{"missing master name", "redis: [{address: 127.0.0.1:1}]\nsentinel: {addresses: [127.0.0.1:2]}", []string{"redis[0].master_name: missing"}},
		{"no sentinel", "redis: [{address: 127.0.0.1:1, master_name: m}]", []string{"sentinel: no addresses"}},
		{"restart mode", "sentinel: {addresses: [127.0.0.1:2]}\ntwemproxy: [{name: a, config_file: /tmp/x.yml, restart: {mode: reboot}}]", []string{`twemproxy[0].restart.mode: "reboot"`}},
		{"wait order", "sentinel: {addresses: [127.0.0.1:2]}\ntwemproxy: [{name: a, config_file: /tmp/x.yml, wait: {min: 2s, max: 1s}}]", []string{"twemproxy[0].wait: min 2s is greater than max 1s"}},
		{"command without argv", "sentinel: {addresses: [127.0.0.1:2]}\ntwemproxy: [{name: a, config_file: /tmp/x.yml, restart: {mode: command}}]", []string{"restart_command: missing"}},
		{"nothing to do", "log: {level: loud}", []string{"nothing to do", `log.level: "loud"`}},
		{"secret file", "sentinel: {addresses: [127.0.0.1:2], password_file: /nonexistent/pw}\nredis: [{address: 127.0.0.1:1, master_name: m}]", []string{`sentinel.password_file: cannot read "/nonexistent/pw"`}},
		{"duplicate announce", "sentinel: {addresses: [127.0.0.1:2]}\nredis: [{address: 127.0.0.1:1, master_name: m}, {address: 127.0.0.1:1, master_name: m}]", []string{`redis[1].announce: "127.0.0.1:1" is also redis[0]`}},
		{"malformed yaml", "redis: [", []string{"malformed YAML"}},
		{"failover", "sentinel: {addresses: [127.0.0.1:2]}\nredis: [{address: 127.0.0.1:1, master_name: m}]\nfailover: {act_on: soon, pause_writes: maybe, pause_slice: 1ms, bogus: 1}",
			[]string{`failover.act_on: "soon": want promotion or announcement`, `failover.pause_writes: "maybe": want true or false`,
				"failover.pause_slice: 1ms: want 50ms to 5s", `unknown key "bogus" in failover`}},
		{"failover pause_writes as a string", "sentinel: {addresses: [127.0.0.1:2]}\nredis: [{address: 127.0.0.1:1, master_name: m}]\nfailover: {pause_writes: \"false\"}",
			[]string{`failover.pause_writes: "false": want true or false`}},
		{"redis_auth secret file", "sentinel: {addresses: [127.0.0.1:2], redis_auth: {password_file: /nonexistent/rpw}}\ntwemproxy: [{name: a, config_file: /tmp/x.yml}]", []string{`sentinel.redis_auth.password_file: cannot read "/nonexistent/rpw"`}},
		{"redis_auth user without password", "sentinel: {addresses: [127.0.0.1:2], redis_auth: {username: agent}}\ntwemproxy: [{name: a, config_file: /tmp/x.yml}]", []string{`sentinel.redis_auth.username: "agent" without password_file`}},
		{"redis_auth tls", "sentinel: {addresses: [127.0.0.1:2], redis_auth: {tls: {ca_file: /tmp/ca.pem}}}\ntwemproxy: [{name: a, config_file: /tmp/x.yml}]", []string{"sentinel.redis_auth.tls: files given but enabled is false"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "c.yml", tc.yaml)
			_, err := Load(path, noEnv, Overrides{})
			if err == nil {
				t.Fatal("Load accepted a bad file")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestEveryProblemReported(t *testing.T) {
	path := writeFile(t, t.TempDir(), "c.yml", `
colour: blue
timing: {tick: fast}
sentinel: {addresses: [127.0.0.1:26379]}
redis:
  - address: 127.0.0.1:99999
    master_name: m
`)
	_, err := Load(path, noEnv, Overrides{})
	probs, ok := err.(Problems)
	if !ok {
		t.Fatalf("want Problems, got %T %v", err, err)
	}
	if len(probs) != 3 {
		t.Fatalf("want 3 problems, got %d:\n%v", len(probs), err)
	}
}
