package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Kinds of Consul requests, as the counting proxy classifies them.
const (
	reqRead       = "read"       // GET: resync, discovery, blocking queries
	reqRegister   = "register"   // PUT /v1/agent/service/register
	reqDeregister = "deregister" // PUT /v1/agent/service/deregister/...
	reqStatus     = "status"     // a TTL update that changes the check's status
	reqOutput     = "output"     // a TTL update that changes the check's output (its reason), not its status
	reqFollowUp   = "follow-up"  // a TTL update right after a register of its service (a fresh registration's status)
	reqRefresh    = "refresh"    // a TTL update with status and output unchanged: keeps the TTL alive
	reqOtherWrite = "other-write"
)

// consulRequest is one request an agent made to Consul.
type consulRequest struct {
	At   time.Time
	Kind string
	Path string
}

// consulCounter is a loopback reverse proxy in front of Consul's HTTP API
// that counts and classifies every request of the one agent that talks to
// it: exact, and independent of the agent's own metrics.
type consulCounter struct {
	ln  net.Listener
	srv *http.Server

	mu         sync.Mutex
	reqs       []consulRequest
	lastStatus map[string]string    // check ID → last status written
	lastOutput map[string]string    // check ID → last output written by a TTL update
	registered map[string]time.Time // service ID → last register
}

// startConsulCounter listens on ip (a free port) and forwards to consulAddr.
func startConsulCounter(ip, consulAddr string) (*consulCounter, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	target := &url.URL{Scheme: "http", Host: consulAddr}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // blocking queries and streams pass at once
	// An agent stopped in the middle of a blocking query is no news.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	cc := &consulCounter{ln: ln, lastStatus: map[string]string{}, lastOutput: map[string]string{}, registered: map[string]time.Time{}}
	cc.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cc.record(r)
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = cc.srv.Serve(ln) }()
	return cc, nil
}

// Addr is where the agent should send its Consul requests.
func (cc *consulCounter) Addr() string { return cc.ln.Addr().String() }

func (cc *consulCounter) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = cc.srv.Shutdown(ctx)
}

// record classifies r; it reads the body of a TTL update (small JSON) and
// puts it back for the proxy.
func (cc *consulCounter) record(r *http.Request) {
	now := time.Now()
	p := r.URL.Path
	kind := reqOtherWrite
	var checkID, status, output, serviceID string
	switch {
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		kind = reqRead
	case p == "/v1/agent/service/register":
		kind = reqRegister
		var body struct {
			ID, Name string
			Check    *struct{ CheckID, Status string }
		}
		if b := peekBody(r); b != nil && json.Unmarshal(b, &body) == nil {
			serviceID = body.ID
			if serviceID == "" {
				serviceID = body.Name
			}
			if body.Check != nil && body.Check.CheckID != "" {
				checkID, status = body.Check.CheckID, body.Check.Status
			}
		}
	case strings.HasPrefix(p, "/v1/agent/service/deregister/"):
		kind = reqDeregister
	case strings.HasPrefix(p, "/v1/agent/check/update/"):
		checkID = strings.TrimPrefix(p, "/v1/agent/check/update/")
		var body struct{ Status, Output string }
		if b := peekBody(r); b != nil && json.Unmarshal(b, &body) == nil {
			status, output = body.Status, body.Output
		}
		kind = reqRefresh
	case strings.HasPrefix(p, "/v1/agent/check/pass/"), strings.HasPrefix(p, "/v1/agent/check/warn/"), strings.HasPrefix(p, "/v1/agent/check/fail/"):
		parts := strings.SplitN(strings.TrimPrefix(p, "/v1/agent/check/"), "/", 2)
		checkID = parts[1]
		status = map[string]string{"pass": "passing", "warn": "warning", "fail": "critical"}[parts[0]]
		kind = reqRefresh
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	switch kind {
	case reqRegister:
		if serviceID != "" {
			cc.registered[serviceID] = now
		}
		if checkID != "" && status != "" {
			cc.lastStatus[checkID] = status
		}
	case reqRefresh:
		prev, seen := cc.lastStatus[checkID]
		prevOut, seenOut := cc.lastOutput[checkID]
		svc := strings.TrimPrefix(checkID, "service:")
		switch {
		case seen && prev != status:
			kind = reqStatus
		case now.Sub(cc.registered[svc]) < 250*time.Millisecond:
			kind = reqFollowUp
		case !seen:
			kind = reqStatus
		case seenOut && prevOut != output:
			// The registrar writes a tag change's check first, then
			// registers: the check write changes the reason.
			kind = reqOutput
		}
		cc.lastStatus[checkID] = status
		cc.lastOutput[checkID] = output
	}
	cc.reqs = append(cc.reqs, consulRequest{At: now, Kind: kind, Path: p})
}

func peekBody(r *http.Request) []byte {
	if r.Body == nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	return b
}

// count returns the requests in [from, to) by kind.
func (cc *consulCounter) count(from, to time.Time) map[string]int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	out := map[string]int{}
	for _, r := range cc.reqs {
		if !r.At.Before(from) && r.At.Before(to) {
			out[r.Kind]++
		}
	}
	return out
}

// changes is the number of writes that change what Consul holds: register,
// deregister, TTL updates that change the status or the output, and the
// status written right after a fresh register.
func changes(byKind map[string]int) int {
	return byKind[reqRegister] + byKind[reqDeregister] + byKind[reqStatus] + byKind[reqOutput] + byKind[reqFollowUp]
}

func total(byKind map[string]int) int {
	n := 0
	for _, v := range byKind {
		n += v
	}
	return n
}
