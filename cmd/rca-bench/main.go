// Command rca-bench measures the figures of docs/BENCHMARKS.md against real
// Consul, Redis, Sentinel and nutcracker on loopback, running the agent binary
// it is given. It is a developer's tool, kept out of the daemon's binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/seed42ef8afe/redis-consul-agent/internal/bench"
)

func main() {
	app := &cli.App{
		Name:  "rca-bench",
		Usage: "measure the docs/BENCHMARKS.md figures against real Consul, Redis, Sentinel and nutcracker on loopback",
		Description: "Starts the components through the integration harness, runs the scenarios and prints a table of\n" +
			"medians and spread. It reports; it never fails because a figure misses its target.\n" +
			"Figures: " + strings.Join(bench.Figures, ", ") + ".",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent", Value: "bin/redis-consul-agent", Usage: "the redis-consul-agent `BINARY` the stack runs"},
			&cli.IntFlag{Name: "failovers", Usage: "measured failovers per twemproxy kind (default 20, short 3)"},
			&cli.IntFlag{Name: "kills", Usage: "kill -9 runs for the outage figure (default 10, short 1)"},
			&cli.IntFlag{Name: "storm-masters", Usage: "masters in the storm (default 200, short 20)"},
			&cli.IntFlag{Name: "storm-bursts", Usage: "storm bursts (default 3, short 1)"},
			&cli.DurationFlag{Name: "idle-for", Usage: "idle measurement per agent size (default 1m, short 5s)"},
			&cli.BoolFlag{Name: "short", Usage: "the CI version: few iterations, a small storm, a short idle"},
			&cli.StringFlag{Name: "only", Usage: "comma-separated figures to run: " + strings.Join(bench.Figures, ",")},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.BoolFlag{Name: "markdown", Usage: "print the table as Markdown"},
			&cli.StringFlag{Name: "dir", Usage: "keep the processes' files in `DIR` (default: a new dir on tmpfs, removed)"},
			&cli.StringFlag{Name: "proxy-dir", Usage: "keep the twemproxy configs in `DIR` (default: a new dir in TMPDIR, on disk, removed)"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress lines on stderr"},
		},
		Action: func(c *cli.Context) error {
			agent, err := filepath.Abs(c.String("agent"))
			if err != nil {
				return fmt.Errorf("agent binary: %w", err)
			}
			if _, err := os.Stat(agent); err != nil {
				return fmt.Errorf("agent binary (--agent; make build makes bin/redis-consul-agent): %w", err)
			}
			o := bench.Options{
				Agent: agent, Dir: c.String("dir"), ProxyDir: c.String("proxy-dir"), Short: c.Bool("short"),
				Failovers: c.Int("failovers"), Kills: c.Int("kills"),
				StormMasters: c.Int("storm-masters"), StormBursts: c.Int("storm-bursts"), IdleFor: c.Duration("idle-for"),
				Command: "rca-bench " + strings.Join(os.Args[1:], " "),
			}
			if s := c.String("only"); s != "" {
				for _, f := range strings.Split(s, ",") {
					o.Only = append(o.Only, strings.TrimSpace(f))
				}
			}
			if !c.Bool("quiet") {
				o.Progress = c.App.ErrWriter
				if o.Progress == nil {
					o.Progress = os.Stderr
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Run(ctx, o)
			if rep != nil {
				switch {
				case c.Bool("json"):
					if jerr := rep.WriteJSON(c.App.Writer); jerr != nil {
						return jerr
					}
				case c.Bool("markdown"):
					rep.WriteMarkdown(c.App.Writer)
				default:
					rep.WriteTable(c.App.Writer)
				}
			}
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			return nil
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "rca-bench:", err)
		os.Exit(1)
	}
}
