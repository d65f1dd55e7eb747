package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/agent/statusview"
	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// parseTemplates parses every *.html of the embedded dashboard.
func parseTemplates(assets fs.FS, funcs template.FuncMap) (*template.Template, error) {
	return template.New("dashboard").Funcs(funcs).ParseFS(assets, "*.html")
}

// hashAssets fingerprints the static files so their URLs change with their
// content and browsers may cache them for good.
func hashAssets(assets fs.FS) (map[string]string, error) {
	out := map[string]string{}
	err := fs.WalkDir(assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".html") {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[p] = hex.EncodeToString(sum[:6])
		return nil
	})
	return out, err
}

func (s *Server) funcs() template.FuncMap {
	return template.FuncMap{
		"asset": func(name string) string {
			return "/assets/" + name + "?v=" + s.hashes[name]
		},
		"dur":   statusview.ShortDur,
		"ago":   statusview.Ago,
		"clock": func(t time.Time) string { return t.Local().Format("15:04:05") },
		"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"date": func(t time.Time) string {
			return t.Local().Format("2006-01-02 15:04:05 MST")
		},
		"ms": func(d time.Duration) string {
			return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
		},
		"stclass": statusClass,
		"verdict": verdictLabel,
		"short": func(s string, n int) string {
			if len(s) <= n {
				return s
			}
			return s[:n]
		},
		"keys": statusview.SortedKeys,
		"meta": func(n *status.ClusterNode, k string) string {
			if n == nil {
				return ""
			}
			return n.Meta[k]
		},
		"same": addr.Same,
		"truthof": func(masters []status.Master, name string) string {
			for _, m := range masters {
				if m.Name == name {
					return m.Addr
				}
			}
			return ""
		},
	}
}

// statusClass maps a Consul check status (or an up/down word) to a CSS class.
func statusClass(st string) string {
	switch st {
	case api.HealthPassing, "up", "ok", "agree", "master":
		return "ok"
	case api.HealthWarning, "degraded", "stale":
		return "warn"
	case api.HealthCritical, "down", "failed", "error", "split-brain", "disagree":
		return "bad"
	case "rolled-back":
		return "warn"
	}
	return "unknown"
}

// verdictLabel is the word on a shard badge.
func verdictLabel(v string) string {
	switch v {
	case status.VerdictOK:
		return "OK"
	case status.VerdictDegraded:
		return "Degraded"
	case status.VerdictSplitBrain:
		return "Split brain"
	case status.VerdictDown:
		return "No master"
	}
	return "Unknown"
}

// page is what the templates receive.
type page struct {
	statusview.View
	Wall bool
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, name string) {
	now := s.opts.Now()
	snap := s.snapshot()
	cl := s.cluster(r.Context())
	p := page{View: statusview.Build(snap, cl, now, s.opts.RefreshInterval), Wall: r.URL.Query().Get("view") == "wall"}
	var buf bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&buf, name, p); err != nil {
		s.log.Error("render dashboard", "template", name, "error", err)
		http.Error(w, "dashboard: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "page")
}

// handleLive serves the sections of the page that change, for the page's
// script to swap in place.
func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "fragment")
}

var contentTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
}

func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Path
	if _, ok := s.hashes[name]; !ok {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(s.assets, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	if ct, ok := contentTypes[path.Ext(name)]; ok {
		w.Header().Set("Content-Type", ct)
	}
	if r.URL.Query().Get("v") == s.hashes[name] {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+s.hashes[name]+`"`)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}
