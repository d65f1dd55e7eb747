package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestDashboardTellsTheWholeFailover: with an agent beside every Redis and
// one beside twemproxy, the dashboard of the agent beside a replica that
// was not promoted (which itself tags nothing and moves nothing) shows the
// failover once, with Sentinel's phases and every agent's action, each with
// a time: the new master tagged by the agent beside it, twemproxy moved by
// the agent beside it. /v1/cluster and `status` tell the same story.
func TestDashboardTellsTheWholeFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul, Redis, Sentinel, nutcracker, four agents and Chromium")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	c := harness.ForTest(t, sandbox.Options{})
	consul, err := c.StartConsul(sandbox.ConsulOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shard, err := c.StartShard(sandbox.ShardOptions{Name: "mymaster", Replicas: 2, Sentinels: 3, Quorum: 2})
	if err != nil {
		t.Fatal(err)
	}
	var sentinels []string
	for _, s := range shard.Sentinels {
		sentinels = append(sentinels, s.Addr())
	}
	// One agent per Redis host, named after its node, registering its
	// Redis and its Sentinel.
	agents := map[string]*sandbox.Agent{} // Redis address → its agent
	nodeOf := map[string]string{}         // Redis address → the agent's node name
	for i, r := range shard.Nodes() {
		node := fmt.Sprintf("redis-host-%d", i+1)
		a, err := c.StartAgent(bin, "agent-"+node, r.IP(), map[string]any{
			"node_name": node,
			"consul":    map[string]any{"address": consul.HTTPAddr()},
			"sentinel":  map[string]any{"addresses": sentinels},
			"redis":     []any{map[string]any{"address": r.Addr(), "master_name": shard.Name}},
			"sentinels": []any{map[string]any{"address": shard.Sentinels[i].Addr()}},
		})
		if err != nil {
			t.Fatal(err)
		}
		agents[r.Addr()], nodeOf[r.Addr()] = a, node
	}
	proxy := startStoryProxy(t, c, bin, consul, shard, sentinels)

	oldMaster := shard.Master.Addr()
	if err := opsPoll(ctx, "the proxy agent's cluster view to show "+oldMaster+" as the healthy master", func(ctx context.Context) error {
		var cl status.Cluster
		if err := opsGetJSON(ctx, proxy.URL("/v1/cluster"), &cl); err != nil {
			return err
		}
		if len(cl.Shards) != 1 || cl.Shards[0].Verdict != status.VerdictOK || len(cl.Shards[0].Masters) != 1 || cl.Shards[0].Masters[0].Addr != oldMaster {
			return fmt.Errorf("shards %+v", cl.Shards)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := shard.Node(oldMaster).Kill(); err != nil {
		t.Fatal(err)
	}
	newMaster, err := shard.WaitFailover(ctx, oldMaster)
	if err != nil {
		t.Fatal(err)
	}
	var bystander string // the replica that was not promoted
	for _, r := range shard.Nodes() {
		if a := r.Addr(); a != oldMaster && a != newMaster {
			bystander = a
		}
	}
	t.Logf("failover %s -> %s; reading the dashboard of %s, beside replica %s", oldMaster, newMaster, nodeOf[bystander], bystander)
	watcher := agents[bystander]

	bctx := browser(t)
	problems := &pageProblems{}
	if err := chromedp.Listen(bctx, problems.listen); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = chromedp.Cancel(bctx) })
	defer stop()
	if err := chromedp.Do(bctx, chromedp.Navigate(watcher.URL("/"))); err != nil {
		t.Fatalf("open %s: %v", watcher.URL("/"), err)
	}

	tagged := fmt.Sprintf("%s: tagged %s master in Consul", nodeOf[newMaster], newMaster)
	moved := fmt.Sprintf("proxy-host: moved twemproxy to %s", newMaster)
	storyJS := fmt.Sprintf(`(function(){var s=document.querySelector('tr.story[data-story=%q][data-to=%q]');if(!s)return '';`+
		`return Array.from(s.querySelectorAll('li.step')).map(function(li){return li.querySelector('time.stamp').textContent.trim()+' '+li.getAttribute('data-node')+': '+li.textContent.replace(/^\S+\s+\S+\s+\S+\s+/,'').trim()}).join('\n')})()`,
		shard.Name, newMaster)
	rowJS := fmt.Sprintf(`(function(){var r=document.querySelector('tr[data-failover=%q][data-to=%q]');if(!r)return '';return Array.from(r.cells).map(function(c){return c.textContent.trim()}).join('|')})()`, shard.Name, newMaster)
	var story, row string
	// Peers are asked at most every 5s: a minute is ample.
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := opsPoll(wctx, "the bystander's dashboard to tell the whole failover to "+newMaster, func(context.Context) error {
		if row, err = evalString(bctx, rowJS); err != nil {
			return err
		}
		cells := strings.Split(row, "|")
		if len(cells) < 5 || cells[3] == "—" || cells[4] == "—" {
			return fmt.Errorf("timeline row %q: want the Consul and twemproxy times other agents reported", row)
		}
		if story, err = evalString(bctx, storyJS); err != nil {
			return err
		}
		for _, want := range []string{tagged, moved, "Sentinel: "} {
			if !strings.Contains(story, want) {
				return fmt.Errorf("story lacks %q:\n%s", want, story)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("timeline row: %s\nstory:\n%s", row, story)
	for _, line := range strings.Split(story, "\n") {
		if strings.HasPrefix(line, "—") || strings.TrimSpace(line) == "" {
			t.Errorf("a step without a time: %q", line)
		}
	}
	if n, err := evalString(bctx, fmt.Sprintf(`String(document.querySelectorAll('tr[data-failover=%q][data-to=%q]').length)`, shard.Name, newMaster)); err != nil || n != "1" {
		t.Errorf("the failover is listed %s times, want once (%v)", n, err)
	}
	if shots := os.Getenv("RCA_SCREENSHOT_DIR"); shots != "" {
		screenshot(t, bctx, filepath.Join(screenshotDir(t), "dashboard-failover-story.png"))
	}
	problems.check(t)

	// /v1/cluster: one story, told by the agents that took part.
	var cl status.Cluster
	if err := opsGetJSON(ctx, watcher.URL("/v1/cluster"), &cl); err != nil {
		t.Fatal(err)
	}
	var stories []status.ClusterFailover
	for _, f := range cl.Failovers {
		if f.Master == shard.Name && f.To == newMaster {
			stories = append(stories, f)
		}
	}
	if len(stories) != 1 {
		t.Fatalf("/v1/cluster has %d stories of the failover to %s, want 1: %+v", len(stories), newMaster, cl.Failovers)
	}
	f := stories[0]
	for _, n := range []string{nodeOf[bystander], nodeOf[newMaster], "proxy-host"} {
		if !strings.Contains(strings.Join(f.Nodes, ","), n) {
			t.Errorf("story told by %v, want %s among them", f.Nodes, n)
		}
	}
	if f.Gap <= 0 || f.ConsulAt.IsZero() || f.TwemproxyAt.IsZero() {
		t.Errorf("story: gap %s, consul %s, twemproxy %s", f.Gap, f.ConsulAt, f.TwemproxyAt)
	}
	if len(cl.Peers) != 3 {
		t.Errorf("peers = %+v, want the 3 other agents", cl.Peers)
	}
	for _, p := range cl.Peers {
		if p.Error != "" && p.Node != nodeOf[oldMaster] {
			t.Errorf("peer %s (%s) did not answer: %s", p.Node, p.Addr, p.Error)
		}
	}
	t.Logf("story: told by %v, gap %s, %d phases, %d actions", f.Nodes, f.Gap, len(f.Phases), len(f.Actions))

	// `status` against the bystander prints it too.
	out, err := exec.CommandContext(ctx, bin, "status", "--http-addr", watcher.HTTPAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{tagged, moved} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

// startStoryProxy starts twemproxy's host: one pool in front of the shard
// and the agent that supervises nutcracker, named proxy-host.
func startStoryProxy(t *testing.T, c *sandbox.Cluster, bin string, consul *sandbox.Consul, shard *sandbox.Shard, sentinels []string) *sandbox.Agent {
	t.Helper()
	ip := c.NewIP()
	listen, err := c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := c.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := c.ProcessDir("nutcracker-story")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nutcracker.yml")
	pool := fmt.Sprintf("shop:\n  listen: %s:%d\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  auto_eject_hosts: false\n  timeout: 400\n  servers:\n    - %s:1 %s\n",
		ip, listen, shard.Master.Addr(), shard.Name)
	if err := os.WriteFile(conf, []byte(pool), 0o644); err != nil {
		t.Fatal(err)
	}
	nut, err := sandbox.Binary("nutcracker")
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.StartAgent(bin, "agent-proxy-host", ip, map[string]any{
		"node_name": "proxy-host",
		"consul":    map[string]any{"address": consul.HTTPAddr()},
		"sentinel":  map[string]any{"addresses": sentinels},
		"twemproxy": []any{map[string]any{
			"name": "main", "config_file": conf, "nutcracker": nut,
			"restart": map[string]any{"mode": "supervise", "command": []string{nut, "-c", conf, "-s", fmt.Sprint(stats), "-a", ip}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
