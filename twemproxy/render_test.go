package twemproxy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExecuteTemplate(t *testing.T) {
	data := TemplateData{Node: "n1", Proxy: "main", Masters: map[string]TemplateMaster{}}
	for n, a := range map[string]string{"b": "10.0.0.2:6379", "a": "[fd00::1]:6380"} {
		m, err := templateMaster(n, a)
		if err != nil {
			t.Fatal(err)
		}
		data.Masters[n] = m
	}
	out, err := ExecuteTemplate("t", `{{ master "a" }} {{ server "b" 3 }} {{ range masterNames }}{{ . }},{{ end }} {{ (index .Masters "a").Host }} {{ .Node }}`, data)
	if err != nil {
		t.Fatal(err)
	}
	if want := "fd00::1:6380 10.0.0.2:6379:3 b a,b, fd00::1 n1"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
	if _, err := ExecuteTemplate("t", `{{ master "zzz" }}`, data); err == nil || !strings.Contains(err.Error(), `no Sentinel truth for master "zzz"`) {
		t.Errorf("unknown master: %v", err)
	}
	if _, err := ExecuteTemplate("t", `{{ .Nope }}`, data); err == nil {
		t.Error("unknown field accepted")
	}
	if _, err := ExecuteTemplate("t", `{{ if }}`, data); err == nil || !strings.Contains(err.Error(), "parse template") {
		t.Errorf("bad template: %v", err)
	}
}

// TestShippedTemplates renders the default template and the examples and
// has nutcracker check the results.
func TestShippedTemplates(t *testing.T) {
	bin := nutcrackerBin(t)
	masters := map[string]Master{"shard-a": {Addr: "127.0.0.1:7001"}, "shard-b": {Addr: "127.0.0.1:7002"}}
	files, _ := filepath.Glob("../templates/examples/*.tmpl")
	files = append(files, "../templates/nutcracker.yml.tmpl")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			dir := t.TempDir()
			rd, err := Render(RenderOptions{Name: "main", Node: "n1", ConfigFile: filepath.Join(dir, "nc.yml"), Template: f}, masters)
			if err != nil {
				t.Fatal(err)
			}
			if rd.Current != nil || !rd.Changed() {
				t.Errorf("render of a missing file: %+v", rd)
			}
			if err := Validate(context.Background(), bin, dir, rd.Desired); err != nil {
				t.Fatalf("nutcracker rejects %s:\n%s\n%v", f, rd.Desired, err)
			}
			pools, err := Pools(rd.Desired)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pools {
				for _, s := range p.Servers {
					if masters[s.Name].Addr != s.Addr() {
						t.Errorf("pool %s server %s at %s", p.Name, s.Name, s.Addr())
					}
				}
			}
			// Rendering again from the written file is a fixed point.
			if err := os.WriteFile(filepath.Join(dir, "nc.yml"), rd.Desired, 0o644); err != nil {
				t.Fatal(err)
			}
			again, err := Render(RenderOptions{Name: "main", Node: "n1", ConfigFile: filepath.Join(dir, "nc.yml"), Template: f}, masters)
			if err != nil || again.Changed() {
				t.Errorf("second render changed the file: %v\n%s", err, again.Desired)
			}
		})
	}
}

func TestRenderIsADryRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nc.yml")
	if err := os.WriteFile(file, []byte(twoPools), 0o644); err != nil {
		t.Fatal(err)
	}
	rd, err := Render(RenderOptions{ConfigFile: file}, map[string]Master{"shard-a": {Addr: "10.9.9.9:6379"}})
	if err != nil {
		t.Fatal(err)
	}
	if !rd.Changed() || len(rd.Changes) != 1 || !bytes.Contains(rd.Desired, []byte("10.9.9.9:6379:2 shard-a")) {
		t.Errorf("render: %+v", rd.Changes)
	}
	assertFile(t, file, twoPools)
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("render left files: %v", entries)
	}
	if _, err := Render(RenderOptions{ConfigFile: filepath.Join(dir, "missing.yml")}, nil); err == nil {
		t.Error("edit mode on a missing file")
	}
}

// TestRenderKeepsStaleAddresses: a truth the Sentinels cannot confirm is
// never acted on, and a template never loses the shard.
func TestRenderKeepsStaleAddresses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nc.yml")
	if err := os.WriteFile(file, []byte(twoPools), 0o644); err != nil {
		t.Fatal(err)
	}
	masters := map[string]Master{
		"shard-a": {Addr: "10.9.9.9:6379", Stale: true},
		"shard-b": {Addr: "10.0.0.2:6379"},
	}
	rd, err := Render(RenderOptions{ConfigFile: file}, masters)
	if err != nil || rd.Changed() {
		t.Errorf("edit mode acted on a stale truth: %v %+v", err, rd.Changes)
	}
	tmpl := `alpha:
  listen: 127.0.0.1:22121
  servers:
{{- range masterNames }}
   - {{ server . 1 }}
{{- end }}
`
	cur := "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 10.0.0.1:6379:1 shard-a\n   - 10.0.0.2:6379:1 shard-b\n"
	if err := os.WriteFile(file, []byte(cur), 0o644); err != nil {
		t.Fatal(err)
	}
	rd, err = Render(RenderOptions{ConfigFile: file, TemplateText: tmpl}, masters)
	if err != nil || rd.Changed() {
		t.Errorf("template mode acted on a stale truth: %v\n%s", err, rd.Desired)
	}
}

// TestRenderKeepsShardsTheTruthLacks: a template never drops a shard the
// file uses because the truth does not list it right now.
func TestRenderKeepsShardsTheTruthLacks(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nc.yml")
	cur := "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 10.0.0.1:6379:1 shard-a\n   - 10.0.0.2:6379:1 shard-b\n"
	if err := os.WriteFile(file, []byte(cur), 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl := "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n{{- range masterNames }}\n   - {{ server . 1 }}\n{{- end }}\n"
	rd, err := Render(RenderOptions{ConfigFile: file, TemplateText: tmpl}, map[string]Master{"shard-b": {Addr: "10.0.0.3:6379"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 10.0.0.1:6379:1 shard-a\n   - 10.0.0.3:6379:1 shard-b\n"
	if string(rd.Desired) != want {
		t.Errorf("render:\n%s\nwant:\n%s", rd.Desired, want)
	}
}
