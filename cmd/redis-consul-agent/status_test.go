package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/seed42ef8afe/redis-consul-agent/agent/httpapi"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

type staticSource struct {
	snap    status.Snapshot
	cluster status.Cluster
}

func (s staticSource) Snapshot() status.Snapshot              { return s.snap }
func (s staticSource) Cluster(context.Context) status.Cluster { return s.cluster }

func statusServer(t *testing.T) *httptest.Server {
	t.Helper()
	src := staticSource{
		snap: status.Snapshot{Node: "cache-9", Version: "v9",
			Instances: []status.Instance{{ServiceID: "redis-10.0.0.1-6379", Announce: "10.0.0.1:6379", MasterName: "s1", Role: "master", Status: "passing", Why: "confirmed"}}},
		cluster: status.Cluster{Shards: []status.Shard{{Name: "s1",
			Masters: []status.ClusterNode{{Addr: "10.0.0.1:6379", Status: "passing", Node: "n1"}}}}},
	}
	s, err := httpapi.New(httpapi.Options{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func runApp(args ...string) (string, error) {
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	app.ErrWriter = &out
	err := app.Run(append([]string{"redis-consul-agent"}, args...))
	return out.String(), err
}

func TestStatusCommandTable(t *testing.T) {
	ts := statusServer(t)
	out, err := runApp("status", "--http-addr", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"redis-consul-agent on cache-9 (v9)", "SHARDS", "s1     DEGRADED  10.0.0.1:6379", "LOCAL REDIS", "redis-10.0.0.1-6379"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusCommandJSON(t *testing.T) {
	ts := statusServer(t)
	t.Setenv("RCA_HTTP_ADDR", ts.URL)
	out, err := runApp("status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json is not a Report: %v\n%s", err, out)
	}
	if r.Status.Node != "cache-9" || len(r.Cluster.Shards) != 1 || r.Cluster.Shards[0].Verdict != status.VerdictDegraded {
		t.Errorf("report = %+v", r)
	}
}

func TestStatusCommandUnreachable(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	addr := ts.URL
	ts.Close()
	_, err := runApp("status", "-a", addr)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("err = %#v, want exit code 1", err)
	}
	if !strings.Contains(err.Error(), "no agent answering at "+addr+": is `redis-consul-agent agent` running?") {
		t.Errorf("err = %v", err)
	}
}
