package discovery

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulhealth"
)

// TestConsulSentinels: discovery lists the registered Sentinels, and
// refuses a list from which Consul hid instances the ACL token may not read
// (Consul says so only in a header): a silently partial or empty list would
// shrink the Sentinels the majority is counted over.
func TestConsulSentinels(t *testing.T) {
	for _, tc := range []struct {
		name     string
		filtered bool
		want     []string
		wantErr  string
	}{
		{name: "readable", want: []string{"10.0.0.1:26379", "10.0.0.2:26379"}},
		{name: "hidden by ACLs", filtered: true, wantErr: `consul hid instances of "redis-sentinel" the ACL token may not read (it needs service:read on "redis-sentinel" and node:read)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/health/service/redis-sentinel" {
					http.NotFound(w, r)
					return
				}
				entries := []*api.ServiceEntry{
					{Node: &api.Node{Address: "10.0.0.2"}, Service: &api.AgentService{Port: 26379}},
					{Node: &api.Node{Address: "10.0.0.9"}, Service: &api.AgentService{Address: "10.0.0.1", Port: 26379}},
				}
				// The api client stops reading the meta headers at the
				// first one missing: send the usual ones.
				w.Header().Set("X-Consul-Index", "7")
				w.Header().Set("X-Consul-LastContact", "0")
				w.Header().Set("X-Consul-KnownLeader", "true")
				if tc.filtered {
					w.Header().Set("X-Consul-Results-Filtered-By-ACLs", "true")
					entries = entries[:1]
				}
				_ = json.NewEncoder(w).Encode(entries)
			}))
			defer srv.Close()
			client, err := NewConsulClient(ConsulOptions{Address: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ConsulSentinels(client, "redis-sentinel")(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !consulhealth.IsFiltered(err) {
					t.Fatalf("err = %v, want a *consulhealth.FilteredError containing %q", err, tc.wantErr)
				}
				if got != nil {
					t.Fatalf("got %v with the error, want no list", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
