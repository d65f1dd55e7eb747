// Package statusclient is the reading side of the status contract: a
// client for a running agent's /v1/status and /v1/cluster, and the terminal
// rendering `redis-consul-agent status` prints. The server side is
// agent/httpapi; both speak agent/status and show agent/statusview, so the
// table and the dashboard tell one story.
package statusclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
)

// Client reads a running agent's status API, for `redis-consul-agent status`
// and for tests.
type Client struct {
	// BaseURL is the agent's root, e.g. http://127.0.0.1:8765.
	BaseURL string
	// HTTP is the client used; default: one with a 5s timeout.
	HTTP *http.Client
}

// NewClient accepts what an operator types for --http-addr: host:port, :port
// or a full http(s) URL.
func NewClient(addr string) *Client {
	base := strings.TrimRight(strings.TrimSpace(addr), "/")
	if !strings.Contains(base, "://") {
		if strings.HasPrefix(base, ":") {
			base = "127.0.0.1" + base
		}
		base = "http://" + base
	}
	return &Client{BaseURL: base, HTTP: &http.Client{Timeout: 5 * time.Second}}
}

// UnreachableError means nothing answered at the agent's address: the agent
// is not running, or listens elsewhere.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("no agent answering at %s: is `redis-consul-agent agent` running? (%v)", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Status fetches /v1/status; raw is the body as received, for --json.
func (c *Client) Status(ctx context.Context) (snap status.Snapshot, raw json.RawMessage, err error) {
	raw, err = c.get(ctx, "/v1/status")
	if err == nil {
		err = decode(raw, "/v1/status", &snap)
	}
	return snap, raw, err
}

// Cluster fetches /v1/cluster; raw is the body as received, for --json.
func (c *Client) Cluster(ctx context.Context) (cl status.Cluster, raw json.RawMessage, err error) {
	raw, err = c.get(ctx, "/v1/cluster")
	if err == nil {
		err = decode(raw, "/v1/cluster", &cl)
	}
	return cl, raw, err
}

func decode(raw []byte, path string, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string) ([]byte, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	u := c.BaseURL + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("status API at %s: %w", c.BaseURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if isUnreachable(err) {
			return nil, &UnreachableError{URL: c.BaseURL, Err: err}
		}
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// isUnreachable tells "nobody there" (refused, no route, bad host, timeout
// while connecting) from an agent that answered badly.
func isUnreachable(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	var ue *url.Error
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		return true
	case errors.As(err, &dns):
		return true
	case errors.As(err, &ue) && ue.Timeout():
		return true
	}
	return false
}
