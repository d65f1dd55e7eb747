package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// Parsing of Redis and Sentinel replies (SENTINEL MASTERS, ROLE) shared by
// the Monitor and the instance watchers.

// masterInfo is the part of a SENTINEL MASTERS entry the agent uses.
type masterInfo struct {
	Addr            string
	Flags           []string
	FailoverTimeout time.Duration // 0 if not reported
	DownAfter       time.Duration // down-after-milliseconds, 0 if not reported
	// ConfigEpoch is the epoch of the configuration this Sentinel holds
	// (the failover that made Addr the master); the Sentinels themselves
	// let the higher one win.
	ConfigEpoch uint64
}

// sentinelMasters runs SENTINEL MASTERS and returns the masters by name.
func sentinelMasters(ctx context.Context, c *redis.Client) (map[string]masterInfo, error) {
	return parseMasters(c.Do(ctx, "sentinel", "masters"))
}

// parseMasters parses the reply of SENTINEL MASTERS.
func parseMasters(cmd *redis.Cmd) (map[string]masterInfo, error) {
	v, err := cmd.Slice()
	if err != nil {
		return nil, fmt.Errorf("sentinel masters: %w", err)
	}
	out := make(map[string]masterInfo, len(v))
	for _, e := range v {
		kv := fieldMap(e)
		name := kv["name"]
		if name == "" {
			continue
		}
		out[name] = masterFields(kv)
	}
	return out, nil
}

// sentinelMaster runs SENTINEL MASTER name: the one entry of that name.
func sentinelMaster(ctx context.Context, c *redis.Client, name string) (masterInfo, error) {
	v, err := c.Do(ctx, "sentinel", "master", name).Result()
	if err != nil {
		return masterInfo{}, fmt.Errorf("sentinel master %s: %w", name, err)
	}
	return masterFields(fieldMap(v)), nil
}

// masterFields reads one SENTINEL MASTERS entry.
func masterFields(kv map[string]string) masterInfo {
	mi := masterInfo{Flags: strings.Split(kv["flags"], ",")}
	if ms, err := strconv.Atoi(kv["failover-timeout"]); err == nil && ms > 0 {
		mi.FailoverTimeout = time.Duration(ms) * time.Millisecond
	}
	if ms, err := strconv.Atoi(kv["down-after-milliseconds"]); err == nil && ms > 0 {
		mi.DownAfter = time.Duration(ms) * time.Millisecond
	}
	if e, err := strconv.ParseUint(kv["config-epoch"], 10, 64); err == nil {
		mi.ConfigEpoch = e
	}
	if a, err := addr.Join(kv["ip"], kv["port"]); err == nil {
		mi.Addr = a
	}
	return mi
}

// fieldMap turns a RESP2 flat key/value array (or a RESP3 map) into a map.
func fieldMap(v any) map[string]string {
	out := map[string]string{}
	switch t := v.(type) {
	case []any:
		for i := 0; i+1 < len(t); i += 2 {
			k, _ := t[i].(string)
			val, _ := t[i+1].(string)
			out[k] = val
		}
	case map[any]any:
		for k, val := range t {
			ks, _ := k.(string)
			vs, _ := val.(string)
			out[ks] = vs
		}
	}
	return out
}

// roleInfo is the parsed reply of ROLE.
type roleInfo struct {
	Role       string // master, replica, sentinel
	Offset     int64
	MasterAddr string // replica: the master it follows
	LinkState  string // replica: connect, connecting, sync, connected
	Replicas   int    // master: connected replicas
}

// readRole runs ROLE and parses it.
func readRole(ctx context.Context, c *redis.Client) (roleInfo, error) {
	v, err := c.Do(ctx, "role").Slice()
	if err != nil {
		return roleInfo{}, fmt.Errorf("ROLE: %w", err)
	}
	return parseRole(v)
}

// parseRole parses a ROLE reply.
func parseRole(v []any) (roleInfo, error) {
	if len(v) == 0 {
		return roleInfo{}, errors.New("ROLE: empty reply")
	}
	kind, _ := v[0].(string)
	var r roleInfo
	switch kind {
	case "master":
		r.Role = consulname.RoleMaster
		if len(v) >= 2 {
			r.Offset, _ = v[1].(int64)
		}
		if len(v) >= 3 {
			if reps, ok := v[2].([]any); ok {
				r.Replicas = len(reps)
			}
		}
	case "slave", "replica":
		r.Role = consulname.RoleReplica
		if len(v) < 5 {
			return roleInfo{}, fmt.Errorf("ROLE: short replica reply %v", v)
		}
		host, _ := v[1].(string)
		port, _ := v[2].(int64)
		r.MasterAddr = net.JoinHostPort(host, fmt.Sprint(port))
		r.LinkState, _ = v[3].(string)
		r.Offset, _ = v[4].(int64)
	case "sentinel":
		r.Role = "sentinel"
	default:
		return roleInfo{}, fmt.Errorf("ROLE: unknown role %q", kind)
	}
	return r, nil
}
