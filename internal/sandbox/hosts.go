package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
)

// Hosts gives sandbox hosts names in a hosts file (/etc/hosts), so that
// Redis, Sentinel and the agent can be tested with hostnames (Sentinel's
// resolve-hostnames and announce-hostnames). Every name is under one domain
// of the caller's choosing, which should be unique to the test; every line
// it adds ends with a marker naming that domain, and Close removes exactly
// those lines and nothing else. The file is edited in place (in a container
// it is often a bind mount that cannot be renamed over).
type Hosts struct {
	path   string
	domain string

	mu    sync.Mutex
	added []string // the exact lines written
}

var domainRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)

// NewHosts edits path (usually /etc/hosts) with names under domain (e.g.
// "rca-3f2a9c.test"). Call Close when done, from t.Cleanup.
func NewHosts(path, domain string) (*Hosts, error) {
	if !domainRe.MatchString(domain) {
		return nil, fmt.Errorf("hosts: domain %q is not a lower-case DNS name with a dot", domain)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("hosts: %s is not writable (run as root): %w", path, err)
	}
	f.Close()
	return &Hosts{path: path, domain: domain}, nil
}

// Domain is the domain every name is under.
func (h *Hosts) Domain() string { return h.domain }

// Add names ip label.<domain> and returns that name.
func (h *Hosts) Add(label, ip string) (string, error) {
	name := strings.ToLower(label) + "." + h.domain
	line := fmt.Sprintf("%s %s # rca-sandbox %s", ip, name, h.domain)
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := os.ReadFile(h.path)
	if err != nil {
		return "", fmt.Errorf("hosts: add %s: %w", name, err)
	}
	text := line + "\n"
	if len(b) > 0 && b[len(b)-1] != '\n' {
		text = "\n" + text // a line of its own
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return "", fmt.Errorf("hosts: add %s: %w", name, err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("hosts: add %s: %w", name, err)
	}
	h.added = append(h.added, line)
	return name, nil
}

// Close removes the lines Add wrote, leaving every other line as it was.
func (h *Hosts) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.added) == 0 {
		return nil
	}
	b, err := os.ReadFile(h.path)
	if err != nil {
		return fmt.Errorf("hosts: remove the test's names: %w", err)
	}
	mine := map[string]bool{}
	for _, l := range h.added {
		mine[l] = true
	}
	lines := strings.Split(string(b), "\n")
	keep := make([]string, 0, len(lines))
	for _, l := range lines {
		if !mine[l] {
			keep = append(keep, l)
		}
	}
	out := []byte(strings.Join(keep, "\n"))
	if bytes.Equal(out, b) {
		h.added = nil
		return nil
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("hosts: remove the test's names: %w", err)
	}
	_, err = f.Write(out)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("hosts: remove the test's names from %s: %w", h.path, err)
	}
	h.added = nil
	return nil
}
