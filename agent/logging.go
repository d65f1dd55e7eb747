package agent

import (
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
)

// NewLogger builds the root logger from the log section: level and text or
// JSON format.
func NewLogger(c config.Log, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            "redis-consul-agent",
		Level:           hclog.LevelFromString(c.Level),
		JSONFormat:      c.Format == "json",
		Output:          w,
		IncludeLocation: false,
		TimeFormat:      "2006-01-02T15:04:05.000Z0700",
	})
}
