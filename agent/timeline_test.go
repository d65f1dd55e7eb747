package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

// TestMergeStories: three agents journal one failover each (the one beside
// the new master tags it, the one beside twemproxy moves it, the one beside
// a replica that was not promoted only learns of it); the merged timeline
// tells it once, with Sentinel's phases, every agent's action and the gap.
func TestMergeStories(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const from, to = "10.0.0.1:6379", "10.0.0.2:6379"
	sentinel := func(ms int, typ string) status.Event {
		return status.Event{Time: at(ms), Kind: "sentinel", Type: typ, Subject: "s1"}
	}
	reports := []nodeReport{
		{Node: "replica-3", // learnt it first, did nothing
			Failovers: []status.Failover{{Master: "s1", From: from, To: to, At: at(1400)}},
			Events:    []status.Event{sentinel(1000, "+odown"), sentinel(1200, "+elected-leader"), sentinel(1390, "+switch-master")},
		},
		{Node: "redis-2", // beside the new master
			Failovers: []status.Failover{{Master: "s1", From: from, To: to, At: at(1402), ConsulAt: at(1404)}},
			Events: []status.Event{sentinel(1100, "+odown"), sentinel(1300, "+promoted-slave"),
				{Time: at(1404), Kind: "consul", Type: "register", Subject: "redis-10.0.0.2-6379", Detail: "tags=[master,s1-master]"},
				// Not part of the story: before its first sign, a check
				// state change, the agent's own heartbeat.
				{Time: at(-5000), Kind: "consul", Type: "register", Subject: "redis-10.0.0.2-6379", Detail: "tags=[replica,s1-replica]"},
				{Time: at(1405), Kind: "consul", Type: "status", Subject: "redis-10.0.0.2-6379", Detail: "passing: master"},
				{Time: at(1406), Kind: "consul", Type: "register", Subject: "redis-consul-agent-redis-2-8765"}},
		},
		{Node: "proxy-1",
			Failovers: []status.Failover{
				{Master: "s1", From: "10.0.0.9:6379", To: from, At: at(-3600_000), TwemproxyAt: at(-3599_990)}, // an older one
				{Master: "s1", From: from, To: to, At: at(1401), TwemproxyAt: at(1409)},
			},
		},
	}
	stories := mergeStories(reports)
	if len(stories) != 2 {
		t.Fatalf("stories = %d, want 2 (the old one and this one): %+v", len(stories), stories)
	}
	s := stories[1]
	if s.Master != "s1" || s.From != from || s.To != to || !s.At.Equal(at(1400)) {
		t.Errorf("story = %s %s → %s at %s", s.Master, s.From, s.To, s.At)
	}
	if strings.Join(s.Nodes, ",") != "replica-3,proxy-1,redis-2" {
		t.Errorf("nodes = %v", s.Nodes)
	}
	var phases []string
	for _, p := range s.Phases {
		phases = append(phases, p.Name+"@"+p.Node)
	}
	if got := strings.Join(phases, " "); got != "down@replica-3 leader elected@replica-3 promoted@redis-2 announced@replica-3" {
		t.Errorf("phases = %s", got)
	}
	var actions []string
	for _, a := range s.Actions {
		actions = append(actions, a.Node+": "+a.What)
	}
	want := "redis-2: tagged 10.0.0.2:6379 master in Consul|redis-2: consul register redis-10.0.0.2-6379|proxy-1: moved twemproxy to 10.0.0.2:6379"
	if got := strings.Join(actions, "|"); got != want {
		t.Errorf("actions:\n got %s\nwant %s", got, want)
	}
	if !s.ConsulAt.Equal(at(1404)) || !s.TwemproxyAt.Equal(at(1409)) {
		t.Errorf("consul %s twemproxy %s", s.ConsulAt, s.TwemproxyAt)
	}
	if s.Gap != 409*time.Millisecond {
		t.Errorf("gap = %s, want 409ms (down at 1000 → last proxy at 1409)", s.Gap)
	}
	if old := stories[0]; len(old.Nodes) != 1 || old.Nodes[0] != "proxy-1" || len(old.Phases) != 0 {
		t.Errorf("old story = %+v", old)
	}
}

// TestMergeStoriesSeparatesRepeats: a failover back and forth, or one to the
// same address much later, is two stories, not one.
func TestMergeStoriesSeparatesRepeats(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := nodeReport{Node: "n1", Failovers: []status.Failover{
		{Master: "s1", From: "a", To: "b", At: t0},
		{Master: "s1", From: "b", To: "a", At: t0.Add(time.Second)},
		{Master: "s1", From: "a", To: "b", At: t0.Add(2 * time.Second)},
		{Master: "s2", From: "c", To: "d", At: t0.Add(2 * time.Second)},
	}}
	other := nodeReport{Node: "n2", Failovers: []status.Failover{{Master: "s1", From: "a", To: "b", At: t0.Add(2*time.Second + time.Millisecond)}}}
	stories := mergeStories([]nodeReport{r, other})
	if len(stories) != 4 {
		t.Fatalf("stories = %d, want 4: %+v", len(stories), stories)
	}
	for _, s := range stories {
		// n2's report joins the latest s1 story to b, not the first one.
		if want := 1 + map[bool]int{true: 1}[s.Master == "s1" && s.At.Equal(t0.Add(2*time.Second))]; len(s.Nodes) != want {
			t.Errorf("story %s → %s at %s: nodes %v, want %d", s.Master, s.To, s.At, s.Nodes, want)
		}
	}
}

func TestMergeStoriesBounded(t *testing.T) {
	var fs []status.Failover
	for i := range 3 * maxStories {
		fs = append(fs, status.Failover{Master: "s1", To: "x", At: time.Unix(int64(i*100), 0)})
	}
	if got := len(mergeStories([]nodeReport{{Node: "n", Failovers: fs}})); got != maxStories {
		t.Errorf("stories = %d, want %d", got, maxStories)
	}
}

// TestMergeStoriesHAProxy: an agent beside a HAProxy tells "HAProxy moved"
// at its time, with the driver's move event, and the gap runs to the
// HAProxy move when it is the last target to apply the failover.
func TestMergeStoriesHAProxy(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const from, to = "10.0.0.1:6379", "10.0.0.2:6379"
	reports := []nodeReport{
		{Node: "redis-2",
			Failovers: []status.Failover{{Master: "s1", From: from, To: to, At: at(1402), ConsulAt: at(1404)}},
			Events:    []status.Event{{Time: at(1000), Kind: "sentinel", Type: "+odown", Subject: "s1"}},
		},
		{Node: "edge-1",
			Failovers: []status.Failover{{Master: "s1", From: from, To: to, At: at(1401), HAProxyAt: at(1403)}},
			Events:    []status.Event{{Time: at(1403), Kind: "haproxy", Type: "move", Subject: "edge", Detail: "redis-rw/s1 " + from + " -> " + to}},
		},
		{Node: "edge-2", // a second HAProxy, later
			Failovers: []status.Failover{{Master: "s1", From: from, To: to, At: at(1401), HAProxyAt: at(1420)}},
		},
	}
	stories := mergeStories(reports)
	if len(stories) != 1 {
		t.Fatalf("stories = %d, want 1: %+v", len(stories), stories)
	}
	s := stories[0]
	var actions []string
	for _, a := range s.Actions {
		actions = append(actions, a.Node+": "+a.What)
	}
	want := "edge-1: HAProxy moved to 10.0.0.2:6379|edge-1: haproxy move edge|redis-2: tagged 10.0.0.2:6379 master in Consul|edge-2: HAProxy moved to 10.0.0.2:6379"
	if got := strings.Join(actions, "|"); got != want {
		t.Errorf("actions:\n got %s\nwant %s", got, want)
	}
	if !s.HAProxyAt.Equal(at(1420)) {
		t.Errorf("HAProxyAt = %s, want the last HAProxy that moved (1420)", s.HAProxyAt)
	}
	if s.Gap != 420*time.Millisecond {
		t.Errorf("gap = %s, want 420ms (down at 1000 → last HAProxy at 1420)", s.Gap)
	}
}
