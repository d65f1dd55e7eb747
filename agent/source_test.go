package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
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
		{name: "hidden by ACLs", filtered: true, wantError: "consul: the ACL token may not read every instance of redis, redis-sentinel, twemproxy, haproxy, so this view is incomplete"},
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

// TestConsulStatus: the consul block counts what Consul holds, names what
// it does not, and keeps the latest error with its time and service.
func TestConsulStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := consulStatus([]discovery.RegistrationStatus{
		{Service: discovery.Service{ID: "a"}, Registered: true, LastError: "old", LastErrorAt: t0},
		{Service: discovery.Service{ID: "b"}, LastError: "register b: consul did not answer", LastErrorAt: t0.Add(time.Minute)},
		{Service: discovery.Service{ID: "c"}, Registered: true},
	})
	want := status.Consul{Services: 3, Registered: 2, Unregistered: []string{"b"},
		LastError: "register b: consul did not answer", LastErrorAt: t0.Add(time.Minute), LastErrorService: "b"}
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("consulStatus = %+v, want %+v", *got, want)
	}
}
