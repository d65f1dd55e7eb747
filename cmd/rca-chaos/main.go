// Command rca-chaos runs a fault campaign against the real stack (three
// Consul servers, three Sentinels, two shards of three Redis, an agent beside
// every Redis, one beside nutcracker and one beside HAProxy) and checks the
// agent's invariants all through; see internal/chaos. It exits 1 when any
// invariant broke.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/seed42ef8afe/redis-consul-agent/internal/chaos"
)

// quietRedis drops go-redis's own log lines (a dial that failed five
// times): the campaign kills Redis on purpose, and its checks say what
// that cost.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func main() {
	redis.SetLogger(quietRedis{})
	app := &cli.App{
		Name:  "rca-chaos",
		Usage: "inject random faults into a real stack for a while and check that the agent's invariants hold",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent", Value: "bin/redis-consul-agent", Usage: "the redis-consul-agent `BINARY` every host runs"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "the seed that picks the faults (the report prints it)"},
			&cli.DurationFlag{Name: "duration", Value: chaosDefault, Usage: "how long faults are injected"},
			&cli.StringFlag{Name: "faults", Usage: "comma-separated kinds (default all): " + strings.Join(chaos.AllFaults, ",")},
			&cli.DurationFlag{Name: "settle-every", Usage: "heal everything and check convergence this often (default 30s)"},
			&cli.IntFlag{Name: "concurrent", Usage: "faults active at once (default 2)"},
			&cli.StringFlag{Name: "dir", Usage: "keep the processes' files in `DIR` (default: a new dir, removed)"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress lines"},
		},
		Action: func(c *cli.Context) error {
			agent, err := filepath.Abs(c.String("agent"))
			if err != nil {
				return err
			}
			if _, err := os.Stat(agent); err != nil {
				return fmt.Errorf("agent binary (--agent; make build makes bin/redis-consul-agent): %w", err)
			}
			o := chaos.Options{
				Agent: agent, Seed: c.Uint64("seed"), Duration: c.Duration("duration"), Dir: c.String("dir"),
				SettleEvery: c.Duration("settle-every"), MaxConcurrent: c.Int("concurrent"),
			}
			if s := c.String("faults"); s != "" {
				for _, f := range strings.Split(s, ",") {
					o.Faults = append(o.Faults, strings.TrimSpace(f))
				}
			}
			if !c.Bool("quiet") {
				o.Progress = os.Stderr
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := chaos.Run(ctx, o)
			if err != nil {
				return err
			}
			rep.Write(os.Stdout)
			if len(rep.Violations) > 0 {
				return fmt.Errorf("%d violation(s); reproduce with --seed %d", len(rep.Violations), rep.Seed)
			}
			return nil
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "rca-chaos:", err)
		os.Exit(1)
	}
}

// chaosDefault is the length of a campaign run by hand.
const chaosDefault = 30 * time.Minute
