package twemproxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// twoPools is the kind of file operators write: comments everywhere, weights,
// hash tags, auth, timeouts and a server without a name.
const twoPools = `# nutcracker for the cache tier
# (managed by hand and by redis-consul-agent)
alpha:                       # main pool
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  hash_tag: "{}"
  distribution: ketama
  auto_eject_hosts: false
  redis: true
  redis_auth: s3cret
  timeout: 400
  server_retry_timeout: 2000
  servers:
   # shard A, weight 2
   - 10.0.0.1:6379:2 shard-a   # the big one
   - 10.0.0.2:6379:1 shard-b
   - 10.0.0.9:6379:1
beta:
  listen: 127.0.0.1:22122
  redis: true
  preconnect: true
  servers:
    - 10.0.0.2:6379:1 shard-b
`

func TestEditKeepsEveryOtherByte(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		masters map[string]string
		want    string // src with these replacements, in order
		repl    [][2]string
		changes []string
	}{
		{
			name:    "one master of two pools",
			src:     twoPools,
			masters: map[string]string{"shard-a": "10.0.0.7:6380", "shard-b": "10.0.0.2:6379"},
			repl:    [][2]string{{"10.0.0.1:6379:2", "10.0.0.7:6380:2"}},
			changes: []string{"alpha/shard-a 10.0.0.1:6379 -> 10.0.0.7:6380"},
		},
		{
			name:    "master shared by two pools",
			src:     twoPools,
			masters: map[string]string{"shard-b": "10.0.0.8:6379"},
			repl:    [][2]string{{"10.0.0.2:6379:1 shard-b", "10.0.0.8:6379:1 shard-b"}, {"10.0.0.2:6379:1 shard-b", "10.0.0.8:6379:1 shard-b"}},
			changes: []string{"alpha/shard-b 10.0.0.2:6379 -> 10.0.0.8:6379", "beta/shard-b 10.0.0.2:6379 -> 10.0.0.8:6379"},
		},
		{
			name: "anchored list used by an alias",
			src: `alpha:
  listen: 127.0.0.1:22121
  servers: &common
   - 10.0.0.1:6379:1 shard-a
beta:
  listen: 127.0.0.1:22122
  servers: *common # same shards
`,
			masters: map[string]string{"shard-a": "10.0.0.3:6379"},
			repl:    [][2]string{{"10.0.0.1:", "10.0.0.3:"}},
			changes: []string{"alpha/shard-a 10.0.0.1:6379 -> 10.0.0.3:6379", "beta/shard-a 10.0.0.1:6379 -> 10.0.0.3:6379"},
		},
		{
			name: "merge key",
			src: `alpha: &base
  listen: 127.0.0.1:22121
  servers:
   - 10.0.0.1:6379:1 shard-a
beta:
  <<: *base
  listen: 127.0.0.1:22122
`,
			masters: map[string]string{"shard-a": "10.0.0.3:6379"},
			repl:    [][2]string{{"10.0.0.1:", "10.0.0.3:"}},
			changes: []string{"alpha/shard-a 10.0.0.1:6379 -> 10.0.0.3:6379", "beta/shard-a 10.0.0.1:6379 -> 10.0.0.3:6379"},
		},
		{
			name: "anchored and tagged scalars",
			src: `alpha:
  listen: 127.0.0.1:22121
  servers:
   - &a 10.0.0.1:6379:1 shard-a
   - !!str 10.0.0.2:6379:1 shard-b
beta:
  listen: 127.0.0.1:22122
  servers: [*a]
`,
			masters: map[string]string{"shard-a": "10.0.0.3:6379", "shard-b": "10.0.0.4:6379"},
			repl:    [][2]string{{"10.0.0.1:", "10.0.0.3:"}, {"10.0.0.2:", "10.0.0.4:"}},
			changes: []string{"alpha/shard-a 10.0.0.1:6379 -> 10.0.0.3:6379", "alpha/shard-b 10.0.0.2:6379 -> 10.0.0.4:6379", "beta/shard-a 10.0.0.1:6379 -> 10.0.0.3:6379"},
		},
		{
			name:    "flow sequence with quoting",
			src:     "alpha: {listen: \"127.0.0.1:22121\", servers: [10.0.0.1:6379:1 shard-a, '10.0.0.2:6379:1 shard-b', \"10.0.0.3:6379:1 shard-c\"]}\n",
			masters: map[string]string{"shard-a": "10.1.0.1:6379", "shard-b": "10.1.0.2:6379", "shard-c": "10.1.0.3:6379"},
			repl:    [][2]string{{"10.0.0.1:", "10.1.0.1:"}, {"10.0.0.2:", "10.1.0.2:"}, {"10.0.0.3:", "10.1.0.3:"}},
			changes: []string{"alpha/shard-a 10.0.0.1:6379 -> 10.1.0.1:6379", "alpha/shard-b 10.0.0.2:6379 -> 10.1.0.2:6379", "alpha/shard-c 10.0.0.3:6379 -> 10.1.0.3:6379"},
		},
		{
			name:    "non-ASCII before the value on the same line",
			src:     "alpha: {listen: 127.0.0.1:22121, note: \"größe ✓\", servers: [10.0.0.1:6379:1 shard-a]} # ünïcode\n",
			masters: map[string]string{"shard-a": "10.1.0.1:6379"},
			repl:    [][2]string{{"10.0.0.1:", "10.1.0.1:"}},
			changes: []string{"alpha/shard-a 10.0.0.1:6379 -> 10.1.0.1:6379"},
		},
		{
			name:    "hostname replaced by the new address, name kept",
			src:     "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - redis-a.example.internal:6379:3 shard-a\n",
			masters: map[string]string{"shard-a": "10.0.0.9:6379"},
			repl:    [][2]string{{"redis-a.example.internal:6379:3", "10.0.0.9:6379:3"}},
			changes: []string{"alpha/shard-a redis-a.example.internal:6379 -> 10.0.0.9:6379"},
		},
		{
			name:    "IPv6 in twemproxy form",
			src:     "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - \"::1:6379:1 shard-a\"\n   - 10.0.0.2:6379:1 shard-b\n",
			masters: map[string]string{"shard-a": "[fd00::2]:6380", "shard-b": "[::1]:6381"},
			repl:    [][2]string{{"::1:6379:1", "fd00::2:6380:1"}, {"- 10.0.0.2:6379:1", "- ::1:6381:1"}},
			changes: []string{"alpha/shard-a [::1]:6379 -> [fd00::2]:6380", "alpha/shard-b 10.0.0.2:6379 -> [::1]:6381"},
		},
		{
			name:    "literal block scalar",
			src:     "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - |-\n     10.0.0.1:6379:1 shard-a\n",
			masters: map[string]string{"shard-a": "10.0.0.2:6379"},
			repl:    [][2]string{{"10.0.0.1:", "10.0.0.2:"}},
			changes: []string{"alpha/shard-a 10.0.0.1:6379 -> 10.0.0.2:6379"},
		},
		{
			name:    "CRLF line endings and a BOM",
			src:     "\xEF\xBB\xBF# win\r\nalpha:\r\n  listen: 127.0.0.1:22121\r\n  servers:\r\n   - 10.0.0.1:6379:1 shard-a\r\n   - 10.0.0.5:6379:1 shard-b\r\n",
			masters: map[string]string{"shard-b": "10.0.0.6:6379"},
			repl:    [][2]string{{"10.0.0.5:", "10.0.0.6:"}},
			changes: []string{"alpha/shard-b 10.0.0.5:6379 -> 10.0.0.6:6379"},
		},
		{
			name:    "unix socket server moves to TCP",
			src:     "alpha:\n  listen: /tmp/nc.sock 0666\n  servers:\n   - /var/run/redis.sock:1 shard-a\n",
			masters: map[string]string{"shard-a": "10.0.0.2:6379"},
			repl:    [][2]string{{"/var/run/redis.sock:1", "10.0.0.2:6379:1"}},
			changes: []string{"alpha/shard-a /var/run/redis.sock -> 10.0.0.2:6379"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.src
			for _, r := range tc.repl {
				if !strings.Contains(want, r[0]) {
					t.Fatalf("bad test: %q not in src", r[0])
				}
				want = strings.Replace(want, r[0], r[1], 1)
			}
			out, changes, err := Edit([]byte(tc.src), tc.masters)
			if err != nil {
				t.Fatalf("Edit: %v", err)
			}
			if string(out) != want {
				t.Errorf("output differs:\n got: %q\nwant: %q", out, want)
			}
			var got []string
			for _, c := range changes {
				got = append(got, c.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.changes, "\n") {
				t.Errorf("changes:\n got: %q\nwant: %q", got, tc.changes)
			}
			// Applying the same truth again changes nothing.
			again, more, err := Edit(out, tc.masters)
			if err != nil || len(more) != 0 || !bytes.Equal(again, out) {
				t.Errorf("second Edit not a no-op: err=%v changes=%v", err, more)
			}
		})
	}
}

func TestEditUnchangedReturnsSrc(t *testing.T) {
	src := []byte(twoPools)
	for _, masters := range []map[string]string{
		nil,
		{"other": "10.9.9.9:1"},
		{"shard-a": "10.0.0.1:6379", "shard-b": "10.0.0.2:6379"},
		{"shard-a": "10.0.0.1:6379", "": "1.2.3.4:5"},
	} {
		out, changes, err := Edit(src, masters)
		if err != nil || len(changes) != 0 {
			t.Fatalf("Edit(%v): %v %v", masters, changes, err)
		}
		if &out[0] != &src[0] || len(out) != len(src) {
			t.Errorf("Edit(%v) did not return src itself", masters)
		}
	}
}

func TestEditErrors(t *testing.T) {
	tests := []struct {
		name, src string
		masters   map[string]string
		want      string
	}{
		{"malformed server", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 10.0.0.1:6379:1 a\n   - bad\n", nil, `pool "alpha": server 2 "bad" (line 5): want host:port:weight [name]`},
		{"weight", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 10.0.0.1:6379:x a\n", nil, `weight "x" is not a number`},
		{"port", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 10.0.0.1:99999:1 a\n", nil, `port "99999" is not in 1-65535`},
		{"name with spaces", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 10.0.0.1:6379:1 a b\n", nil, `the name must be one word`},
		{"server not a string", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - {a: b}\n", nil, `pool "alpha": server 1 (line 4): want a string`},
		{"servers not a list", "alpha:\n  listen: 127.0.0.1:1\n  servers: 10.0.0.1:6379:1\n", nil, `pool "alpha": servers (line 3): want a list`},
		{"no servers", "alpha:\n  listen: 127.0.0.1:1\n", nil, `pool "alpha": servers is missing`},
		{"pool not a mapping", "alpha: 3\n", nil, `pool "alpha" (line 1): want a mapping`},
		{"top level list", "- a\n", nil, `want a mapping of pool names`},
		{"empty", "", nil, `config is empty`},
		{"comment only", "# nothing\n", nil, `want a mapping of pool names`},
		{"bad yaml", "alpha:\n  listen: [\n", nil, `parse yaml`},
		{"two documents", "alpha:\n  listen: 127.0.0.1:1\n  servers: []\n---\nbeta: {}\n", nil, `more than one yaml document (line 4)`},
		{"duplicate pool", "a: {listen: x, servers: []}\na: {listen: x, servers: []}\n", nil, `defined twice`},
		{"escaped address", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - \"\\x31\\x30.0.0.1:6379:1 a\"\n", map[string]string{"a": "10.0.0.2:6379"}, `cannot edit in place`},
		{"bad master address", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 10.0.0.1:6379:1 a\n", map[string]string{"a": "10.0.0.2"}, `master address "10.0.0.2"`},
		{"master address with YAML characters", "alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - 10.0.0.1:6379:1 a\n", map[string]string{"a": "x#y:1"}, `not allowed`},
		{"UTF-16", "\xFF\xFEa\x00", nil, `UTF-16`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := Edit([]byte(tc.src), tc.masters)
			if err == nil {
				t.Fatalf("no error; out=%q", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if out != nil {
				t.Errorf("output returned with an error")
			}
		})
	}
}

func TestEditRefusesAChangeOfMeaning(t *testing.T) {
	// In a flow sequence an IPv6 address in twemproxy form would read as a
	// key: value pair; the edit must be refused, not written.
	src := "alpha: {listen: 127.0.0.1:1, servers: [10.0.0.1:6379:1 a]}\n"
	out, _, err := Edit([]byte(src), map[string]string{"a": "[fd00::1]:6379"})
	if err == nil {
		if _, perr := Pools(out); perr != nil {
			t.Fatalf("Edit wrote a file that does not parse: %q: %v", out, perr)
		}
		pools, _ := Pools(out)
		if got := pools[0].Servers[0].Addr(); got != "[fd00::1]:6379" {
			t.Fatalf("Edit changed the meaning: %q reads as %s", out, got)
		}
	}
}

func TestPools(t *testing.T) {
	pools, err := Pools([]byte(twoPools))
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 || pools[0].Name != "alpha" || pools[1].Name != "beta" {
		t.Fatalf("pools: %+v", pools)
	}
	a := pools[0]
	if a.Listen != "127.0.0.1:22121" || !a.Redis || a.auth != "s3cret" || len(a.Servers) != 3 {
		t.Errorf("alpha: %+v", a)
	}
	if s := a.Servers[0]; s != (Server{Host: "10.0.0.1", Port: 6379, Weight: 2, Name: "shard-a"}) {
		t.Errorf("server 0: %+v", s)
	}
	if s := a.Servers[2]; s.Name != "" || s.Addr() != "10.0.0.9:6379" {
		t.Errorf("server 2: %+v", s)
	}
	for _, tc := range []struct{ listen, network, addr string }{
		{"127.0.0.1:22121", "tcp", "127.0.0.1:22121"},
		{"0.0.0.0:22121", "tcp", "127.0.0.1:22121"},
		{"::1:22121", "tcp", "[::1]:22121"},
		{"/tmp/nc.sock 0666", "unix", "/tmp/nc.sock"},
	} {
		n, ad, err := Pool{Listen: tc.listen}.ListenNetwork()
		if err != nil || n != tc.network || ad != tc.addr {
			t.Errorf("ListenNetwork(%q) = %s %s %v", tc.listen, n, ad, err)
		}
	}
	if _, err := Pools([]byte("a:\n  servers: []\n")); err == nil || !strings.Contains(err.Error(), `pool "a": listen is missing`) {
		t.Errorf("missing listen: %v", err)
	}
}

// FuzzEdit checks that Edit never panics, that what it returns parses as a
// twemproxy config and is a fixed point, and that a truth equal to the file
// changes nothing.
func FuzzEdit(f *testing.F) {
	f.Add([]byte(twoPools), "shard-a", "10.9.9.9:1")
	f.Add([]byte("alpha: {listen: 127.0.0.1:1, servers: [10.0.0.1:6379:1 a, '10.0.0.2:6379:1 b']}\n"), "b", "[::1]:6379")
	f.Add([]byte("a: &x\n  listen: l:1\n  servers: &s\n   - &y 1.2.3.4:5:1 m\nb:\n  <<: *x\n  servers: [*y]\n"), "m", "h:2")
	f.Add([]byte("a:\n  listen: l:1\n  servers:\n   - |\n     1.2.3.4:5:1 m\n"), "m", "host-1:7")
	f.Add([]byte("\xEF\xBB\xBFa:\r\n  listen: l:1\r\n  servers:\r\n   - \"1.2.3.4:5:1 m\"\r\n"), "m", "9.9.9.9:9")
	f.Fuzz(func(t *testing.T, src []byte, name, addr string) {
		out, changes, err := Edit(src, map[string]string{name: addr})
		if err != nil {
			return
		}
		pools, err := Pools(out)
		if err != nil && !strings.Contains(err.Error(), "listen") {
			t.Fatalf("output does not parse: %v\n%q", err, out)
		}
		if len(changes) == 0 && !bytes.Equal(out, src) {
			t.Fatalf("no changes but output differs")
		}
		again, more, err := Edit(out, map[string]string{name: addr})
		if err != nil || len(more) != 0 || !bytes.Equal(again, out) {
			t.Fatalf("not a fixed point: %v %v\n%q\n%q", err, more, out, again)
		}
		// The file's own addresses as the truth: nothing to do.
		truth := map[string]string{}
		for _, p := range pools {
			for _, s := range p.Servers {
				if s.Name != "" && s.Port != 0 {
					if prev, ok := truth[s.Name]; ok && prev != s.Addr() {
						return // one name, two addresses: no single truth
					}
					truth[s.Name] = s.Addr()
				}
			}
		}
		if same, ch, err := Edit(out, truth); err != nil || len(ch) != 0 || !bytes.Equal(same, out) {
			t.Fatalf("truth equal to the file changed it: %v %v", err, ch)
		}
	})
}

func BenchmarkEdit200(b *testing.B) {
	var src strings.Builder
	src.WriteString("big:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n")
	masters := map[string]string{}
	for i := range 200 {
		fmt.Fprintf(&src, "   - 127.0.0.1:%d:1 m%03d\n", 10000+i, i)
		masters[fmt.Sprintf("m%03d", i)] = fmt.Sprintf("127.0.0.1:%d", 20000+i)
	}
	in := []byte(src.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Edit(in, masters); err != nil {
			b.Fatal(err)
		}
	}
}
