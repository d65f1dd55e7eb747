package sandbox

import (
	"reflect"
	"testing"
)

// What HAProxy 2.6.12 answered on a backend whose server the runtime API
// moved from :16401 to :16403 while one session stayed on :16401.
const (
	showServersState = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n" +
		"3 be 1 s1 127.0.0.1 2 0 1 1 5 6 3 2 6 0 0 0 - 16403 - 0 0 - - 0\n" +
		"4 other 1 s2 127.0.0.2 0 1 1 1 5 6 3 2 6 0 0 0 - 6379 - 0 0 - - 0\n\n"
	showSessAll = "0x55611fbe1360: [01/Dec/2026:22:38:48.640486] id=8 proto=tcpv4 source=127.0.0.1:53490\n" +
		"  flags=0x4a, conn_retries=0, conn_exp=<NEVER> conn_et=0x000 srv_conn=0x55611fb207f0, pend_pos=(nil) waiting=0 epoch=0x1\n" +
		"  frontend=fe (id=2 mode=tcp), listener=? (id=1) addr=127.0.0.1:16402\n" +
		"  backend=be (id=3 mode=tcp) addr=127.0.0.1:40842\n" +
		"  server=s1 (id=1) addr=127.0.0.1:16403\n" +
		"0x55611fcfd300: [01/Dec/2026:22:38:48.641244] id=9 proto=unix_stream source=unix:1\n" +
		"  frontend=GLOBAL (id=0 mode=tcp), listener=? (id=1) addr=unix:1\n" +
		"  backend=<NONE> (id=-1 mode=-)\n" +
		"  server=<NONE> (id=-1)\n" +
		"0x7f3ad8039f10: [01/Dec/2026:22:38:48.639058] id=6 proto=tcpv4 source=127.0.0.1:53488\n" +
		"  backend=be (id=3 mode=tcp) addr=127.0.0.1:40840\n" +
		"  server=s1 (id=1) addr=127.0.0.1:16401\n"
)

func TestParseServersState(t *testing.T) {
	got, err := parseServersState(showServersState)
	if err != nil {
		t.Fatal(err)
	}
	want := []HAProxyServerState{
		{Backend: "be", Server: "s1", Addr: "127.0.0.1:16403", OpState: 2, AdminState: 0},
		{Backend: "other", Server: "s2", Addr: "127.0.0.2:6379", OpState: 0, AdminState: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if !got[0].TakesTraffic() || got[1].TakesTraffic() {
		t.Fatalf("TakesTraffic: %v %v", got[0].TakesTraffic(), got[1].TakesTraffic())
	}
	if _, err := parseServersState("Unknown command\n"); err == nil {
		t.Fatal("no header: want an error")
	}
}

func TestParseSessions(t *testing.T) {
	want := []HAProxySession{{Backend: "be", Server: "s1", Addr: "127.0.0.1:16403"}, {Backend: "be", Server: "s1", Addr: "127.0.0.1:16401"}}
	if got := parseSessions(showSessAll); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
