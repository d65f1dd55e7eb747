package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent"
	"github.com/urfave/cli/v2"
)

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:  "render",
		Usage: "print the twemproxy config(s) the agent would write now (dry run: nothing is written)",
		Flags: configFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
			defer cancel()
			out, err := agent.Render(ctx, cfg, agent.NewLogger(cfg.Log, os.Stderr))
			if err != nil {
				return err
			}
			for _, r := range out {
				state := "unchanged"
				if len(r.Changes) > 0 {
					state = fmt.Sprintf("%d change(s)", len(r.Changes))
				}
				fmt.Fprintf(c.App.Writer, "# twemproxy %s -> %s (%s)\n", r.Name, r.ConfigFile, state)
				for _, ch := range r.Changes {
					fmt.Fprintf(c.App.Writer, "#   %v\n", ch)
				}
				c.App.Writer.Write(r.Desired)
			}
			return nil
		},
	}
}
