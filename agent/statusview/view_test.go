package statusview

import (
	"testing"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

// TestFollow: the dashboard's word for a passing pool says what the pool's
// check checked, never more (issue 13: "on the right masters" beside a
// check that said no server followed Sentinel).
func TestFollow(t *testing.T) {
	on := status.Server{Name: "a", Follows: true, Matches: true}
	off := status.Server{Name: "b", Follows: true, Matches: false, Want: "10.0.0.2:6379"}
	unnamed := status.Server{Name: "c", Matches: true}
	for _, tc := range []struct {
		name    string
		servers []status.Server
		want    string
	}{
		{"every server on its master", []status.Server{on, on}, "on the Sentinel masters"},
		{"none named after a Sentinel master", []status.Server{unnamed}, "not following Sentinel"},
		{"no server at all", nil, "not following Sentinel"},
		{"some follow", []status.Server{on, unnamed}, "1 of 2 servers follow Sentinel"},
		{"one elsewhere", []status.Server{on, off, unnamed}, "1 server not on the Sentinel master"},
	} {
		if got := follow(tc.servers); got != tc.want {
			t.Errorf("%s: follow = %q, want %q", tc.name, got, tc.want)
		}
	}
}
