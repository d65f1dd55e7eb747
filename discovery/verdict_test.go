package discovery

import (
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestAnswersAsMaster(t *testing.T) {
	for _, tc := range []struct {
		tags   []string
		status string
		want   bool
	}{
		{[]string{"master", "s1-master"}, api.HealthPassing, true},
		{[]string{"master"}, api.HealthWarning, true}, // DNS answers warning
		{[]string{"master"}, api.HealthCritical, false},
		{[]string{"replica", "s1-replica"}, api.HealthPassing, false},
		{[]string{"s1-master"}, api.HealthPassing, false}, // the shard tag alone is not the role
		{nil, api.HealthPassing, false},
	} {
		if got := AnswersAsMaster(tc.tags, tc.status); got != tc.want {
			t.Errorf("AnswersAsMaster(%v, %s) = %v, want %v", tc.tags, tc.status, got, tc.want)
		}
	}
}

func TestShardVerdict(t *testing.T) {
	node := func(a, st string) ShardNode { return ShardNode{Addr: a, Status: st, Output: "out " + a} }
	truth := func(a string, agree, total int) *Master {
		return &Master{Name: "s1", Addr: a, Source: SourceMajority, Agree: agree, Total: total}
	}
	const m1, m2, r3 = "10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"
	pass, warn, crit := api.HealthPassing, api.HealthWarning, api.HealthCritical
	tests := []struct {
		name     string
		s        ShardState
		want     Verdict
		problems []string // each a substring of one problem, in order; nil: none
	}{
		{"healthy", ShardState{Masters: []ShardNode{node(m1, pass)}, Replicas: []ShardNode{node(r3, pass)}, Truth: truth(m1, 3, 3)},
			VerdictOK, nil},
		{"healthy without a truth", ShardState{Masters: []ShardNode{node(m1, pass)}, Replicas: []ShardNode{node(r3, pass)}},
			VerdictOK, nil},
		{"same master written differently", ShardState{Masters: []ShardNode{node("10.0.0.1:06379", pass)}, Replicas: []ShardNode{node(r3, pass)}, Truth: truth(m1, 3, 3)},
			VerdictOK, nil},
		{"two masters answer: split brain", ShardState{Masters: []ShardNode{node(m1, pass), node(m2, warn)}, Replicas: []ShardNode{node(r3, pass)}, Truth: truth(m2, 3, 3)},
			VerdictSplitBrain, []string{"split brain: 2 masters in Consul (10.0.0.1:6379, 10.0.0.2:6379)"}},
		{"split brain outranks down replicas", ShardState{Masters: []ShardNode{node(m1, pass), node(m2, pass)}, Replicas: []ShardNode{node(r3, crit)}},
			VerdictSplitBrain, []string{"split brain", "replica 10.0.0.3:6379 is critical: out 10.0.0.3:6379"}},
		{"no master, Sentinel names one", ShardState{Replicas: []ShardNode{node(m2, pass)}, Other: []ShardNode{node(m1, crit)}, Truth: truth(m2, 3, 3)},
			VerdictDown, []string{"no master in Consul (Sentinel says 10.0.0.2:6379)", "10.0.0.1:6379 is critical"}},
		{"nothing registered, no truth", ShardState{}, VerdictDown, []string{"no master in Consul"}},
		{"Consul master is not the Sentinel master", ShardState{Masters: []ShardNode{node(m1, pass)}, Replicas: []ShardNode{node(m2, pass)}, Truth: truth(m2, 3, 3)},
			VerdictDegraded, []string{"Consul master 10.0.0.1:6379 is not the Sentinel master 10.0.0.2:6379"}},
		{"master warning", ShardState{Masters: []ShardNode{node(m1, warn)}, Replicas: []ShardNode{node(r3, pass)}, Truth: truth(m1, 3, 3)},
			VerdictDegraded, []string{"master 10.0.0.1:6379 is warning: out 10.0.0.1:6379"}},
		{"Sentinels disagree", ShardState{Masters: []ShardNode{node(m1, pass)}, Replicas: []ShardNode{node(r3, pass)}, Truth: truth(m1, 2, 3)},
			VerdictDegraded, []string{"2/3 Sentinels agree"}},
		{"stale truth", ShardState{Masters: []ShardNode{node(m1, pass)}, Replicas: []ShardNode{node(r3, pass)}, Truth: &Master{Addr: m1, Source: SourceStale, Agree: 1, Total: 3}},
			VerdictDegraded, []string{"no Sentinel majority"}},
		{"no replica to fail over to", ShardState{Masters: []ShardNode{node(m1, pass)}, Truth: truth(m1, 3, 3)},
			VerdictDegraded, []string{"no replica registered: nothing to fail over to"}},
		{"empty output shows a dash", ShardState{Masters: []ShardNode{node(m1, pass)}, Replicas: []ShardNode{{Addr: r3, Status: warn}}},
			VerdictDegraded, []string{"replica 10.0.0.3:6379 is warning: —"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := ShardVerdict(tc.s)
			if got != tc.want {
				t.Errorf("verdict = %q, want %q (problems %q)", got, tc.want, problems)
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems = %q, want %d like %q", problems, len(tc.problems), tc.problems)
			}
			for i, want := range tc.problems {
				if !strings.Contains(problems[i], want) {
					t.Errorf("problem %d = %q, want it to contain %q", i, problems[i], want)
				}
			}
		})
	}
}
