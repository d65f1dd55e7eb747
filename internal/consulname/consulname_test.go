package consulname

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestServiceID(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"redis", "10.0.0.5:6379"}:        "redis-10.0.0.5-6379",
		{"redis", "[::1]:6379"}:           "redis---1-6379",
		{"redis-sentinel", "host:26379"}:  "redis-sentinel-host-26379",
		{"redis-consul-agent", "cache-1"}: "redis-consul-agent-cache-1",
	} {
		if got := ServiceID(in[0], in[1]); got != want {
			t.Errorf("ServiceID(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
	if got := PoolID(Twemproxy, "node/1", "main pool"); got != "twemproxy-node-1-main-pool" {
		t.Errorf("PoolID = %q", got)
	}
}

func TestDNSLabel(t *testing.T) {
	for in, want := range map[string]string{"MyMaster": "mymaster", "a_b.c": "a-b-c", "--x--": "x", "": "x"} {
		if got := DNSLabel(in); got != want {
			t.Errorf("DNSLabel(%q) = %q, want %q", in, got, want)
		}
	}
	long := DNSLabel(string(make([]byte, 80)) + "abc")
	if len(long) > 55 {
		t.Errorf("label of %d bytes", len(long))
	}
}

func TestRoleTags(t *testing.T) {
	if got := RoleTags(RoleMaster, "Shard_A"); !slices.Equal(got, []string{"master", "shard-a-master"}) {
		t.Errorf("RoleTags = %v", got)
	}
	if got := RoleTags(RoleUnknown, "a"); got != nil {
		t.Errorf("unknown role has tags %v", got)
	}
}

func TestServiceIDAndDNSLabel(t *testing.T) {
	ids := map[[2]string]string{
		{"redis", "10.0.0.5:6379"}:          "redis-10.0.0.5-6379",
		{"redis-sentinel", "127.0.0.1:1"}:   "redis-sentinel-127.0.0.1-1",
		{"redis", "[fe80::1]:6379"}:         "redis-fe80--1-6379",
		{"redis", "cache-1.example:6379"}:   "redis-cache-1.example-6379",
		{"redis", "host_with space:6379"}:   "redis-host_with-space-6379",
		{"redis", "no-port"}:                "redis-no-port",
		{"cache/x", "10.0.0.5:6379"}:        "cache-x-10.0.0.5-6379",
		{"redis", "[::ffff:10.0.0.5]:6379"}: "redis---ffff-10.0.0.5-6379",
	}
	for in, want := range ids {
		if got := ServiceID(in[0], in[1]); got != want {
			t.Errorf("ServiceID(%q, %q) = %q, want %q", in[0], in[1], got, want)
		}
	}
	labels := map[string]string{
		"mymaster":              "mymaster",
		"My_Master.01":          "my-master-01",
		"--shard a--":           "shard-a",
		"___":                   "x",
		"éclair":                "clair",
		strings.Repeat("a", 70): strings.Repeat("a", 55),
	}
	for in, want := range labels {
		if got := DNSLabel(in); got != want {
			t.Errorf("DNSLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestServersRoundTrip: a frontend's servers read back as written, over
// several Meta values when one would pass Consul's 512 bytes.
func TestServersRoundTrip(t *testing.T) {
	var in []ProxyServer
	for i := range 40 {
		in = append(in, ProxyServer{Name: fmt.Sprintf("redis-rw/shard-%02d", i), MasterName: fmt.Sprintf("shard-%02d", i), Addr: fmt.Sprintf("10.0.0.%d:6379", i)})
	}
	in = append(in, ProxyServer{Name: "b/missing", MasterName: "m"})
	meta := FormatServers(in)
	if len(meta) < 2 {
		t.Fatalf("40 servers in %d Meta values, want them split", len(meta))
	}
	for k, v := range meta {
		if len(v) > metaValueMax {
			t.Errorf("%s is %d bytes, over Consul's %d", k, len(v), metaValueMax)
		}
	}
	out, bad := ParseServers(meta)
	if bad != 0 || !reflect.DeepEqual(in, out) {
		t.Errorf("read back %d bad, %+v\nwant %+v", bad, out, in)
	}
	if out, bad := ParseServers(map[string]string{MetaServers: "x/y=m@1.2.3.4:1,garbage"}); bad != 1 || len(out) != 1 {
		t.Errorf("a bad entry: %d bad, %+v", bad, out)
	}
}
