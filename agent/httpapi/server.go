// Package httpapi is the agent's operator surface on http.address: the
// status API (/v1/status, /v1/cluster), Prometheus metrics (/metrics), a
// liveness probe (/healthz) and the dashboard (/), whose first paint is
// rendered with html/template and which then refreshes its sections in
// place. It is the server only: the client and the terminal rendering of
// `redis-consul-agent status` are agent/statusclient, and both show the
// view model of agent/statusview, so the page and the table tell one story.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/templates"
)

// Source is what the server shows. The agent implements it: Snapshot from its
// runners, Cluster from Consul's health API (see BuildCluster).
type Source interface {
	// Snapshot is this agent's own state; it must be cheap and never block.
	Snapshot() status.Snapshot
	// Cluster is the whole cluster as Consul sees it. It may block on
	// Consul until ctx ends; failures go in Cluster.Error.
	Cluster(ctx context.Context) status.Cluster
}

// Options configure a Server.
type Options struct {
	// Addr is the listen address, host:port; default 127.0.0.1:8765.
	Addr string
	// Source provides the data; required.
	Source Source
	// Gatherer is what /metrics serves, usually the *prometheus.Registry
	// the agent's telemetry.Metrics and the Go and process collectors are
	// registered on. Nil serves an empty registry.
	Gatherer prometheus.Gatherer
	// Logger receives request errors; default: discard.
	Logger hclog.Logger
	// ClusterTimeout bounds one Source.Cluster call; default 2s.
	ClusterTimeout time.Duration
	// ClusterMaxAge lets concurrent and back-to-back requests share one
	// Source.Cluster call, so open dashboards cost Consul at most one round
	// of queries per period; default 750ms, negative disables.
	ClusterMaxAge time.Duration
	// RefreshInterval is how often the dashboard polls; default 1s.
	RefreshInterval time.Duration
	// Now is the clock; default time.Now. Tests pin it.
	Now func() time.Time
}

// Server serves the operator surface. Create it with New.
type Server struct {
	opts    Options
	log     hclog.Logger
	handler http.Handler
	tmpl    *template.Template
	assets  fs.FS
	hashes  map[string]string

	mu sync.Mutex
	ln net.Listener

	cache clusterCache
}

// New checks opts, parses the embedded dashboard and builds the handler. It
// does not listen yet: see Listen and Serve.
func New(opts Options) (*Server, error) {
	if opts.Source == nil {
		return nil, errors.New("httpapi: Options.Source is required")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:8765"
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.ClusterTimeout <= 0 {
		opts.ClusterTimeout = 2 * time.Second
	}
	if opts.ClusterMaxAge == 0 {
		opts.ClusterMaxAge = 750 * time.Millisecond
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, log: opts.Logger}
	assets, err := fs.Sub(templates.Dashboard, "dashboard")
	if err != nil {
		return nil, fmt.Errorf("httpapi: dashboard assets: %w", err)
	}
	s.assets = assets
	if s.hashes, err = hashAssets(assets); err != nil {
		return nil, fmt.Errorf("httpapi: dashboard assets: %w", err)
	}
	if s.tmpl, err = parseTemplates(assets, s.funcs()); err != nil {
		return nil, fmt.Errorf("httpapi: dashboard templates: %w", err)
	}
	s.handler = s.routes()
	return s, nil
}

// Handler is the whole surface, for tests and for embedding in another mux.
func (s *Server) Handler() http.Handler { return s.handler }

// Listen binds Options.Addr, so that a bad or busy address fails at start
// rather than inside Serve. Serve calls it when it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("http listen on %s: %w", s.opts.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address once Listen has run (useful with port 0), else
// the configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.opts.Addr
}

// Serve answers requests until ctx ends, then shuts down gracefully (open
// requests get a few seconds). It returns nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving status API, metrics and dashboard", "url", "http://"+ln.Addr().String()+"/")
	select {
	case err := <-errc:
		return fmt.Errorf("http serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleDashboard)
	mux.HandleFunc("GET /ui/live", s.handleLive)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("GET /v1/cluster", s.handleCluster)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.HandlerFunc(s.handleAsset)))
	return securityHeaders(mux)
}

// securityHeaders keeps the dashboard self-contained: nothing but this origin
// may be loaded, framed or posted to.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, s.snapshot())
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, s.cluster(r.Context()))
}

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	if r.URL.Query().Has("pretty") {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		s.log.Debug("write response", "path", r.URL.Path, "error", err)
	}
}

// snapshot reads the Source and makes the slices non-nil, so the JSON has
// [] rather than null for clients that iterate.
func (s *Server) snapshot() status.Snapshot {
	snap := s.opts.Source.Snapshot()
	if snap.Now.IsZero() {
		snap.Now = s.opts.Now()
	}
	nonNil(&snap.Instances)
	nonNil(&snap.LocalSentinels)
	nonNil(&snap.Sentinels)
	nonNil(&snap.Masters)
	nonNil(&snap.Proxies)
	nonNil(&snap.Events)
	nonNil(&snap.Failovers)
	return snap
}

func nonNil[T any](p *[]T) {
	if *p == nil {
		*p = []T{}
	}
}

// clusterCache shares one Source.Cluster call between the requests that
// arrive while it runs and for MaxAge after it.
type clusterCache struct {
	mu       sync.Mutex
	val      status.Cluster
	at       time.Time
	inflight chan struct{}
}

func (s *Server) cluster(ctx context.Context) status.Cluster {
	maxAge := s.opts.ClusterMaxAge
	c := &s.cache
	c.mu.Lock()
	if maxAge > 0 && !c.at.IsZero() && s.opts.Now().Sub(c.at) < maxAge {
		v := c.val
		c.mu.Unlock()
		return v
	}
	if ch := c.inflight; ch != nil {
		c.mu.Unlock()
		select {
		case <-ch:
			c.mu.Lock()
			v := c.val
			c.mu.Unlock()
			return v
		case <-ctx.Done():
			return status.Cluster{UpdatedAt: s.opts.Now(), Error: "request cancelled while waiting for Consul"}
		}
	}
	ch := make(chan struct{})
	c.inflight = ch
	c.mu.Unlock()

	// The call runs on its own deadline, not the request's, so that one
	// impatient client does not spoil the answer for those waiting on it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ClusterTimeout)
	v := s.opts.Source.Cluster(cctx)
	if cctx.Err() != nil && v.Error == "" && len(v.Shards) == 0 {
		v.Error = fmt.Sprintf("no answer from Consul within %s", s.opts.ClusterTimeout)
	}
	cancel()
	if v.UpdatedAt.IsZero() {
		v.UpdatedAt = s.opts.Now()
	}
	nonNil(&v.Shards)
	nonNil(&v.Sentinels)
	nonNil(&v.Proxies)
	nonNil(&v.Failovers)
	nonNil(&v.Peers)
	for i := range v.Shards {
		if v.Shards[i].Verdict == "" {
			Assess(&v.Shards[i])
		}
		nonNil(&v.Shards[i].Masters)
		nonNil(&v.Shards[i].Replicas)
		nonNil(&v.Shards[i].Other)
	}

	c.mu.Lock()
	c.val, c.at, c.inflight = v, s.opts.Now(), nil
	c.mu.Unlock()
	close(ch)
	return v
}
