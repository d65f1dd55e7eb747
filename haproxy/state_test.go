package haproxy

import (
	"strings"
	"testing"
)

// real26 is what HAProxy 2.6.12 answered for two servers, one checked and
// down, one unchecked and up.
const real26 = stateHeader +
	"3 be 1 s1 127.0.0.1 0 0 1 1 1 8 2 0 6 0 0 0 - 17002 - 0 0 - - 0\n" +
	"3 be 2 s2 ::1 2 8 1 1 1 1 0 2 0 0 0 0 - 17003 - 0 0 - - 0\n\n"

func TestParseServersState(t *testing.T) {
	got, err := ParseServersState(real26)
	if err != nil {
		t.Fatal(err)
	}
	want := []ServerState{
		{Backend: "be", Server: "s1", Addr: "127.0.0.1:17002", OpState: OpStopped, Admin: 0, CheckState: 6},
		{Backend: "be", Server: "s2", Addr: "[::1]:17003", OpState: OpRunning, Admin: AdminForcedDrain, CheckState: 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d servers, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("server %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if !got[0].Checked() || got[0].Up() || !got[0].Ready() {
		t.Errorf("s1: checked %v up %v ready %v, want true false true", got[0].Checked(), got[0].Up(), got[0].Ready())
	}
	if got[1].Checked() || !got[1].Up() || got[1].Ready() {
		t.Errorf("s2: checked %v up %v ready %v, want false true false", got[1].Checked(), got[1].Up(), got[1].Ready())
	}
}

func TestParseServersStateRejects(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"error message", "Can't find backend.\n", "not a version 1"},
		{"no header", "1\n3 be 1 s1 127.0.0.1 2 0\n", "without a header"},
		{"missing column", "1\n# be_id be_name srv_id srv_name srv_addr\n", "lacks column srv_port"},
		{"short line", stateHeader + "3 be 1 s1\n", "line 3: 4 fields"},
		{"bad number", stateHeader + "3 be 1 s1 127.0.0.1 x 0 1 1 1 8 2 0 6 0 0 0 - 17002 - 0 0 - - 0\n", "srv_op_state \"x\""},
		{"bad port", stateHeader + "3 be 1 s1 127.0.0.1 2 0 1 1 1 8 2 0 6 0 0 0 - p - 0 0 - - 0\n", "srv_port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseServersState(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// An empty HAProxy (no backends) is a valid, empty state.
func TestParseServersStateEmpty(t *testing.T) {
	got, err := ParseServersState(stateHeader)
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want no servers and no error", got, err)
	}
}

func FuzzParseServersState(f *testing.F) {
	f.Add(real26)
	f.Add("1\n# be_name srv_name srv_addr srv_port srv_op_state srv_admin_state srv_check_state\nb s 1.2.3.4 1 2 0 0\n")
	f.Fuzz(func(t *testing.T, in string) {
		st, err := ParseServersState(in)
		if err != nil {
			return
		}
		for _, s := range st {
			if s.Backend == "" || s.Server == "" || s.Addr == "" {
				t.Fatalf("parsed a server with an empty field: %+v", s)
			}
		}
	})
}
