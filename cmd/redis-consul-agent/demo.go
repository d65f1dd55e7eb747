package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/seed42ef8afe/redis-consul-agent/agent/demo"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a local sandbox stack (Consul, 3 Redis, 3 Sentinels, twemproxy, agents) on loopback until Ctrl-C",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "keep the stack's files in `DIR` (default: a temp dir removed on exit)"},
		},
		Action: func(c *cli.Context) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary: %w", err)
			}
			// With `make demo | tee log`, Ctrl-C kills tee too, and the demo's
			// next write to stdout fails with EPIPE; Go then raises SIGPIPE and
			// the process dies without tearing the stack down or removing its
			// directory. Ignored, the write just fails and the teardown runs.
			signal.Ignore(syscall.SIGPIPE)
			// Caught until Run returns, so a second Ctrl-C does not cut the
			// teardown short.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			return demo.Run(ctx, demo.Options{Agent: self, Dir: c.String("dir"), Out: c.App.Writer})
		},
	}
}
