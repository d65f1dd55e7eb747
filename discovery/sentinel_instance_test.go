package discovery

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

func TestDecideSentinel(t *testing.T) {
	tests := []struct {
		name       string
		masters    map[string]masterInfo
		err        error
		last       []string
		wantTags   []string
		wantStatus string
		wantOut    string
	}{
		{"healthy", map[string]masterInfo{
			"shard_b": {Addr: "10.0.0.2:6379", Flags: []string{"master"}},
			"shard-a": {Addr: "10.0.0.1:6379", Flags: []string{"master"}},
		}, nil, nil, []string{"shard-a", "shard-b"}, api.HealthPassing, "monitoring shard-a at 10.0.0.1:6379, shard_b at 10.0.0.2:6379"},
		{"master down", map[string]masterInfo{
			"m": {Addr: "10.0.0.1:6379", Flags: []string{"master", "s_down", "o_down"}},
		}, nil, nil, []string{"m"}, api.HealthWarning, "m at 10.0.0.1:6379 is s_down+o_down"},
		{"monitors nothing", map[string]masterInfo{}, nil, []string{"m"}, nil, api.HealthWarning, "monitors no master"},
		{"unreachable keeps tags", nil, errors.New("connection refused"), []string{"m"}, []string{"m"}, api.HealthCritical, "unreachable: connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tags, h := decideSentinel(tt.masters, tt.err, tt.last)
			if !slices.Equal(tags, tt.wantTags) || h.Status != tt.wantStatus || !strings.Contains(h.Output, tt.wantOut) {
				t.Fatalf("got %q %s %q, want %q %s containing %q", tags, h.Status, h.Output, tt.wantTags, tt.wantStatus, tt.wantOut)
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	m, err := parseRole([]any{"master", int64(42), []any{[]any{"10.0.0.2", "6379", "40"}}})
	if err != nil || m.Role != consulname.RoleMaster || m.Offset != 42 || m.Replicas != 1 {
		t.Fatalf("master: %+v, %v", m, err)
	}
	r, err := parseRole([]any{"slave", "10.0.0.1", int64(6379), "connected", int64(41)})
	if err != nil || r.Role != consulname.RoleReplica || r.MasterAddr != "10.0.0.1:6379" || r.LinkState != "connected" || r.Offset != 41 {
		t.Fatalf("replica: %+v, %v", r, err)
	}
	if _, err := parseRole([]any{"slave", "10.0.0.1"}); err == nil {
		t.Fatal("short replica reply accepted")
	}
	if _, err := parseRole(nil); err == nil {
		t.Fatal("empty reply accepted")
	}
}
