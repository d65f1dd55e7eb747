package discovery

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestRedisLog(t *testing.T) {
	var buf bytes.Buffer
	l := RedisLog{Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &buf})}
	l.Printf(context.Background(), "redis: dial %s failed\n", "10.0.0.1:6379")
	if !strings.Contains(buf.String(), "[DEBUG] redis: dial 10.0.0.1:6379 failed") {
		t.Fatalf("logged %q", buf.String())
	}
}
