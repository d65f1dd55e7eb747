package discovery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
)

// read asks Redis for ROLE and INFO in one round trip.
func (i *Instance) read(ctx context.Context) LocalState {
	i.mu.Lock()
	st := LocalState{LastRole: i.lastRole, Version: i.version}
	reread := i.version == "" || i.reread
	i.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, i.opts.Timeout)
	defer cancel()
	pipe := i.client.Pipeline()
	roleCmd := pipe.Do(rctx, "role")
	replCmd := pipe.Info(rctx, "replication")
	persCmd := pipe.Info(rctx, "persistence")
	var serverCmd *redis.StringCmd
	if reread {
		serverCmd = pipe.Info(rctx, "server")
	}
	_, _ = pipe.Exec(rctx)

	if err := roleCmd.Err(); err != nil {
		if strings.HasPrefix(err.Error(), "LOADING") {
			st.Reachable, st.Loading = true, true
			return st
		}
		st.Err = err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			st.Err = fmt.Sprintf("no answer within %s", i.opts.Timeout)
		}
		// It may come back upgraded: read the version again then, but
		// keep the last one meanwhile so Meta does not churn.
		i.mu.Lock()
		i.reread = true
		i.mu.Unlock()
		return st
	}
	st.Reachable = true
	v, err := roleCmd.Slice()
	if err == nil {
		var r roleInfo
		r, err = parseRole(v)
		st.Role, st.MasterAddr, st.Offset, st.Replicas = r.Role, r.MasterAddr, r.Offset, r.Replicas
	}
	if err != nil {
		st.Reachable, st.Err = false, err.Error()
		return st
	}
	if info, err := persCmd.Result(); err == nil && infoField(info, "loading") == "1" {
		st.Loading = true
	}
	if info, err := replCmd.Result(); err == nil && st.Role == consulname.RoleReplica {
		st.LinkUp = infoField(info, "master_link_status") == "up"
		if s, err := strconv.Atoi(infoField(info, "master_link_down_since_seconds")); err == nil && s >= 0 && !st.LinkUp {
			st.LinkDown = time.Duration(s) * time.Second
		}
	}
	if serverCmd != nil {
		if info, err := serverCmd.Result(); err == nil {
			st.Version = infoField(info, "redis_version")
			i.mu.Lock()
			i.version, i.reread = st.Version, false
			i.mu.Unlock()
		}
	}
	return st
}

// infoField returns the value of key in INFO output, "" if absent. It runs
// for every local Redis every tick, so it scans without building a map.
func infoField(s, key string) string {
	for len(s) > 0 {
		line, rest, _ := strings.Cut(s, "\n")
		s = rest
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
