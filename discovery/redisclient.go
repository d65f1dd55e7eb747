package discovery

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
)

// The go-redis options every Redis and Sentinel connection of the agent
// uses, and the adapter that sends go-redis's own log lines to the agent's
// logger.

// failFast returns go-redis options for the agent's probes: every wait
// bounded by timeout, one dial attempt and no command retries (the next
// tick is the retry), RESP2 and no CLIENT SETINFO, so that a dead node is
// reported in one timeout at most instead of after go-redis's own retries.
func failFast(addr, user, pass string, tlsConf *tls.Config, timeout time.Duration, pool int) *redis.Options {
	return &redis.Options{
		Addr:                  addr,
		Username:              user,
		Password:              pass,
		TLSConfig:             tlsConf,
		Protocol:              2,
		DisableIdentity:       true,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
		PoolSize:              pool,
		// The agent's replies are small (ROLE, INFO sections, SENTINEL
		// queries); go-redis's defaults (32 KiB per buffer, 128 KiB for
		// each of up to 10 pipeline connections) cost ~250 KiB per
		// local Redis: 12 MB of RSS with 50 of them.
		ReadBufferSize:          bufSize,
		WriteBufferSize:         bufSize,
		PipelineReadBufferSize:  bufSize,
		PipelineWriteBufferSize: bufSize,
		PipelinePoolSize:        1,
	}
}

// bufSize is the read and write buffer of every Redis and Sentinel
// connection of the agent.
const bufSize = 8 << 10

// RedisLog adapts the agent's logger for redis.SetLogger. go-redis logs on
// its own (a failed dial each time a node that is down is probed, so every
// tick) straight to stderr; with redis.SetLogger(discovery.RedisLog{Logger: l})
// those lines go to l at debug level instead. Setting it is the agent's
// choice: the go-redis logger is process-wide.
type RedisLog struct{ Logger hclog.Logger }

// Printf implements go-redis's logging interface.
func (l RedisLog) Printf(_ context.Context, format string, v ...any) {
	l.Logger.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
