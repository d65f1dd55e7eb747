package twemproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulname"
	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
	"github.com/seed42ef8afe/redis-consul-agent/internal/proxytruth"
	"github.com/seed42ef8afe/redis-consul-agent/internal/telemetry"
)

// MasterSource is the Sentinel truth the runner follows: the current
// masters, and a notification whenever they change. The agent adapts the
// discovery Monitor to it.
type MasterSource = proxytruth.Source

// Restart modes.
const (
	// ModeSupervise runs nutcracker as the agent's child.
	ModeSupervise = "supervise"
	// ModeCommand runs an operator's restart command.
	ModeCommand = "command"
)

// RestartOptions say how a new config takes effect when Options.Proxy is
// nil.
type RestartOptions struct {
	Mode string // ModeSupervise (default) or ModeCommand
	// Command is nutcracker's argv in supervise mode (default:
	// NutcrackerBin -c ConfigFile) or the restart argv in command mode.
	Command []string
	// Timeout bounds the restart command (default 10s).
	Timeout time.Duration
	// StopTimeout is how long a supervised child gets between SIGTERM and
	// SIGKILL (default 5s).
	StopTimeout time.Duration
}

// Wait is the quiescence of consul-template, plus Settle for bursts.
//
// The first change after a quiet period runs at once (after Min, default 0):
// a failover is when every millisecond counts. Changes that arrive while a
// run is in flight, or within Settle of the previous change or run, belong to
// a burst: they coalesce into one run that starts once the truth has been
// quiet for Settle. No change waits longer than Max after it arrived.
type Wait struct {
	Min time.Duration
	// Max caps the wait (default: 1s, or 4*Min when that is larger).
	Max time.Duration
	// Settle is the quiet time that ends a burst (default 50ms; negative
	// disables it, so every run starts as soon as the previous one ends).
	Settle time.Duration
}

// Options configure a Runner. Timings are fields so tests can shrink them.
type Options struct {
	// Name identifies this twemproxy in logs, metrics and service meta.
	Name string
	// Node is the agent's node name; part of the service IDs.
	Node string
	// ConfigFile is the file nutcracker reads.
	ConfigFile string
	// Template (a path) or TemplateText makes the runner render the file
	// instead of editing it in place.
	Template     string
	TemplateText string
	// NutcrackerBin validates configs with --test-conf (default
	// "nutcracker").
	NutcrackerBin string

	Restart RestartOptions
	// Proxy overrides Restart; tests pass a fake.
	Proxy Proxy
	Wait  Wait

	// Service is the Consul service name of the pools (default twemproxy).
	Service string
	// Announce is the address registered for the pools; default: each
	// pool's listen host (empty for 0.0.0.0, so Consul uses the node's).
	Announce string
	// Registry registers the pools (usually the discovery Registrar); nil
	// means no Consul.
	Registry consulreg.Registry
	// Masters is the Sentinel truth; required.
	Masters MasterSource

	// ValidateTimeout bounds nutcracker --test-conf (default 5s).
	ValidateTimeout time.Duration
	// ProbeTimeout is how long a restarted proxy has to answer on every
	// pool before the backup is restored (default 5s).
	ProbeTimeout time.Duration
	// CheckInterval is the period of the pool health check (default 1s);
	// CheckTimeout bounds one PING (default 500ms).
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	// RetryMin and RetryMax bound the backoff after a failed run or a
	// crash loop (default 500ms and 30s). A supervised child that dies
	// after StableAfter (default 10s) of running is restarted at once.
	RetryMin, RetryMax time.Duration
	StableAfter        time.Duration
	// UrgentRetry is the retry interval (jittered down to half of it) of
	// a run that failed before touching the proxy (render, write,
	// validate: a full disk, say) while the proxy still sends a shard to
	// an address the truth has moved away from (default 500ms). That is an
	// emergency, not a blip: it is retried at this pace for as long as it
	// lasts, not at a backoff that grows to RetryMax.
	UrgentRetry time.Duration

	// Resolver looks up server host names to tell whether a file's IP and
	// the truth's host name (or the reverse) are one node, which is not
	// rewritten (default: the system's). ResolveTimeout bounds a lookup
	// (default 500ms); ResolveCache is how long a result is kept (default
	// 5s).
	Resolver       Resolver
	ResolveTimeout time.Duration
	ResolveCache   time.Duration

	// Logger is the parent logger; the runner logs under the twemproxy name.
	Logger hclog.Logger
	// Metrics is required: the agent's registry, or telemetry.Discard()
	// where nobody scrapes (render, tests).
	Metrics *telemetry.Metrics
	Journal *telemetry.Journal

	// CrashPoint is passed to every config write (WriteOptions.CrashPoint):
	// the crash tests kill the process there. nil in the agent.
	CrashPoint func(step string)
}

// New checks the options, fills in defaults and builds the proxy. Nothing
// runs until Run.
func New(o Options) (*Runner, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Runner{
		o:     o,
		log:   o.Logger.Named(telemetry.LogTwemproxy).With("proxy", o.Name),
		names: newNodeNames(o.Resolver, o.ResolveTimeout, o.ResolveCache),
	}
	r.render = RenderOptions{
		Name: o.Name, Node: o.Node, ConfigFile: o.ConfigFile,
		Template: o.Template, TemplateText: o.TemplateText,
		SameNode: func(a, b string) bool { return r.names.same(context.Background(), a, b) },
	}
	if r.proxy, r.mode, err = newProxy(o, r.log); err != nil {
		return nil, fmt.Errorf("twemproxy %s: %w", o.Name, err)
	}
	if cw, ok := r.proxy.(childWatcher); ok {
		r.child = cw
	}
	r.status = Status{Name: o.Name, ConfigFile: o.ConfigFile, Mode: r.mode}
	return r, nil
}

// withDefaults checks o and fills in every default; the defaults of the
// runner's timings live here and nowhere else in the package.
func (o Options) withDefaults() (Options, error) {
	if o.ConfigFile == "" {
		return o, errors.New("twemproxy: config file is required")
	}
	if o.Masters == nil {
		return o, errors.New("twemproxy: a master source is required")
	}
	if o.Metrics == nil {
		return o, errors.New("twemproxy: metrics are required (telemetry.Discard() where nobody scrapes them)")
	}
	if o.Name == "" {
		o.Name = strings.TrimSuffix(filepath.Base(o.ConfigFile), filepath.Ext(o.ConfigFile))
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.NutcrackerBin == "" {
		o.NutcrackerBin = "nutcracker"
	}
	if o.Service == "" {
		o.Service = consulname.Twemproxy
	}
	if o.Wait.Min < 0 || o.Wait.Max < 0 {
		return o, fmt.Errorf("twemproxy %s: wait: negative durations", o.Name)
	}
	if o.Wait.Max == 0 {
		o.Wait.Max = max(time.Second, 4*o.Wait.Min)
	}
	if o.Wait.Min > o.Wait.Max {
		return o, fmt.Errorf("twemproxy %s: wait: min %s is greater than max %s", o.Name, o.Wait.Min, o.Wait.Max)
	}
	switch {
	case o.Wait.Settle == 0:
		o.Wait.Settle = 50 * time.Millisecond
	case o.Wait.Settle < 0:
		o.Wait.Settle = 0
	}
	setDefault(&o.ValidateTimeout, 5*time.Second)
	setDefault(&o.ProbeTimeout, 5*time.Second)
	setDefault(&o.CheckInterval, time.Second)
	setDefault(&o.CheckTimeout, 500*time.Millisecond)
	setDefault(&o.RetryMin, 500*time.Millisecond)
	setDefault(&o.RetryMax, 30*time.Second)
	setDefault(&o.StableAfter, 10*time.Second)
	setDefault(&o.UrgentRetry, 500*time.Millisecond)
	setDefault(&o.ResolveTimeout, 500*time.Millisecond)
	setDefault(&o.ResolveCache, 5*time.Second)
	if o.Resolver == nil {
		o.Resolver = defaultResolver
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return o, nil
}

// newProxy builds what restarts nutcracker: the options' own Proxy, a
// Supervisor of the child, or the operator's restart command.
func newProxy(o Options, log hclog.Logger) (Proxy, string, error) {
	switch {
	case o.Proxy != nil:
		return o.Proxy, "custom", nil
	case o.Restart.Mode == "" || o.Restart.Mode == ModeSupervise:
		argv := o.Restart.Command
		if len(argv) == 0 {
			argv = []string{o.NutcrackerBin, "-c", o.ConfigFile}
		}
		sup, err := NewSupervisor(SupervisorOptions{
			Argv: argv, StopTimeout: o.Restart.StopTimeout, Logger: log.Named("nutcracker"),
		})
		if err != nil {
			return nil, "", err
		}
		return sup, ModeSupervise, nil
	case o.Restart.Mode == ModeCommand:
		if len(o.Restart.Command) == 0 {
			return nil, "", errors.New("restart mode command needs a command")
		}
		return &CommandRestarter{Argv: o.Restart.Command, Timeout: o.Restart.Timeout}, ModeCommand, nil
	default:
		return nil, "", fmt.Errorf("restart mode %q: want supervise or command", o.Restart.Mode)
	}
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}
