package telemetry

// Logger names, in one place so that log lines can be filtered reliably.
const (
	LogAgent     = "agent"
	LogSentinel  = "sentinel"
	LogConsul    = "consul"
	LogRedis     = "redis"
	LogTwemproxy = "twemproxy"
	LogHTTP      = "http"
)
