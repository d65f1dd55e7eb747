package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
)

// TestClusterSaysWhenACLsHideInstances: Consul answers an empty list, not an
// error, when the token may not read a service or its nodes; the cluster
// view must say it is incomplete rather than show a shard with no master.
func TestClusterSaysWhenACLsHideInstances(t *testing.T) {
	for _, tc := range []struct {
		name      string
		filtered  bool
		wantError string
	}{
		{name: "readable"},
		{name: "hidden by ACLs", filtered: true, wantError: "consul: the ACL token may not read every instance of redis, redis-sentinel, twemproxy, so this view is incomplete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.URL.Path, "/v1/health/service/") {
					http.NotFound(w, r)
					return
				}
				// The api client stops reading the meta headers at the
				// first one missing: send the usual ones.
				w.Header().Set("X-Consul-Index", "7")
				w.Header().Set("X-Consul-LastContact", "0")
				w.Header().Set("X-Consul-KnownLeader", "true")
				if tc.filtered {
					w.Header().Set("X-Consul-Results-Filtered-By-ACLs", "true")
				}
				_, _ = w.Write([]byte("[]"))
			}))
			defer srv.Close()
			client, err := discovery.NewConsulClient(discovery.ConsulOptions{Address: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			cfg := config.Defaults()
			a := &Agent{cfg: &cfg, consul: client}
			c := a.Cluster(context.Background())
			if tc.wantError == "" && c.Error != "" || !strings.Contains(c.Error, tc.wantError) {
				t.Fatalf("Error = %q, want %q", c.Error, tc.wantError)
			}
		})
	}
}
