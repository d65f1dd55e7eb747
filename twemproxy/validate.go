package twemproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// RejectedError is nutcracker refusing a config. nutcracker 0.5 only says
// "syntax is invalid", so Hints add what the agent can tell from reading
// the file itself.
type RejectedError struct {
	File   string
	Output string   // what nutcracker printed
	Hints  []string // likely causes, may be empty
	Err    error    // the exit error
}

// Error says what nutcracker said and what the agent suspects.
func (e *RejectedError) Error() string {
	msg := fmt.Sprintf("nutcracker --test-conf rejected %s: %s", e.File, e.Output)
	if len(e.Hints) > 0 {
		msg += " (likely: " + strings.Join(e.Hints, "; ") + ")"
	}
	return msg
}

// Unwrap returns nutcracker's exit error.
func (e *RejectedError) Unwrap() error { return e.Err }

// CheckFile runs `nutcracker --test-conf -c path` (argv, no shell) and
// returns a *RejectedError when nutcracker refuses the file. ctx bounds the
// run. The pipeline calls it on the temp file it is about to rename into
// place, so what was checked is exactly what goes live.
func CheckFile(ctx context.Context, bin, path string) error {
	return checkFile(ctx, bin, path, path)
}

// checkFile checks path but names it name in errors: the pipeline checks a
// temp file, the operator knows the config file.
func checkFile(ctx context.Context, bin, path, name string) error {
	if bin == "" {
		bin = "nutcracker"
	}
	cmd := exec.CommandContext(ctx, bin, "--test-conf", "-c", path)
	cmd.Dir = filepath.Dir(path)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("nutcracker --test-conf -c %s: %w", path, ctx.Err())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("run nutcracker --test-conf: %w", err)
	}
	rej := &RejectedError{File: name, Output: squeeze(bytes.ReplaceAll(out, []byte(path), []byte(name))), Err: err}
	if src, rerr := os.ReadFile(path); rerr == nil {
		rej.Hints = Hints(src)
	}
	return rej
}

// Validate checks data with nutcracker on a temp file created in dir (the
// config's directory, so relative paths in it resolve the same way) and
// removes the file afterwards. The validate command uses it for a dry run.
func Validate(ctx context.Context, bin, dir string, data []byte) error {
	f, err := os.CreateTemp(dir, ".rca-check-*.yml")
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("validate: write %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("validate: write %s: %w", f.Name(), err)
	}
	return CheckFile(ctx, bin, f.Name())
}

// squeeze returns nutcracker's output on one line, without repeated lines
// (it prints its verdict twice).
func squeeze(out []byte) string {
	var lines []string
	seen := map[string]bool{}
	for _, l := range strings.Split(string(bytes.TrimSpace(out)), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !seen[l] {
			seen[l] = true
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "no output"
	}
	return strings.Join(lines, " / ")
}

// poolKeys are the pool settings nutcracker 0.5 knows.
var poolKeys = map[string]bool{
	"listen": true, "hash": true, "hash_tag": true, "distribution": true, "timeout": true,
	"backlog": true, "preconnect": true, "redis": true, "redis_auth": true, "redis_db": true,
	"server_connections": true, "auto_eject_hosts": true, "server_retry_timeout": true,
	"server_failure_limit": true, "servers": true, "client_connections": true, "tcpkeepalive": true,
}

var (
	hashes        = []string{"one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"}
	distributions = []string{"ketama", "modula", "random"}
)

// Hints reads a config the way nutcracker 0.5 does and lists what it would
// refuse: unknown keys, bad hash or distribution names, YAML features its
// event parser lacks (anchors, aliases, flow collections) and server entries
// it cannot split. It is advice for an error message, not a validator.
func Hints(src []byte) []string {
	var hints []string
	add := func(format string, a ...any) { hints = append(hints, fmt.Sprintf(format, a...)) }
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		add("yaml: %v", err)
		return hints
	}
	var walk func(n *yaml.Node)
	flagged := map[string]bool{}
	walk = func(n *yaml.Node) {
		switch {
		case (n.Anchor != "" || n.Kind == yaml.AliasNode) && !flagged["anchor"]:
			flagged["anchor"] = true
			add("line %d: anchors and aliases are not supported by nutcracker", n.Line)
		case (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && n.Style&yaml.FlowStyle != 0 && !flagged["flow"]:
			flagged["flow"] = true
			add("line %d: flow collections ([...] or {...}) are not supported by nutcracker; use block style", n.Line)
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	root, err := parseDoc(src)
	if err != nil {
		add("%v", err)
		return hints
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		name, pool := root.Content[i].Value, resolve(root.Content[i+1])
		if pool.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(pool.Content); j += 2 {
			k, v := pool.Content[j], resolve(pool.Content[j+1])
			switch {
			case !poolKeys[k.Value]:
				add("pool %q line %d: unknown key %q", name, k.Line, k.Value)
			case k.Value == "hash" && !slices.Contains(hashes, v.Value):
				add("pool %q line %d: hash %q is not one of %s", name, v.Line, v.Value, strings.Join(hashes, ", "))
			case k.Value == "distribution" && !slices.Contains(distributions, v.Value):
				add("pool %q line %d: distribution %q is not one of %s", name, v.Line, v.Value, strings.Join(distributions, ", "))
			case k.Value == "hash_tag" && len(v.Value) != 2:
				add("pool %q line %d: hash_tag %q must be two characters", name, v.Line, v.Value)
			case k.Value == "servers" && v.Kind == yaml.SequenceNode:
				for si, s := range v.Content {
					s = resolve(s)
					if _, _, err := parseServer(s.Value); err != nil {
						add("pool %q server %d %q: %v", name, si+1, s.Value, err)
					} else if strings.Contains(strings.TrimSpace(s.Value), "  ") {
						add("pool %q server %d %q: one space between address and name", name, si+1, s.Value)
					}
				}
			}
		}
		for _, req := range []string{"listen", "servers"} {
			if lookup(pool, req) == nil {
				add("pool %q: %s is missing", name, req)
			}
		}
	}
	sort.Strings(hints)
	return hints
}
