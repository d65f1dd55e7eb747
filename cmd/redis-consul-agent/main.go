// Command redis-consul-agent keeps Redis, Sentinel and twemproxy in Consul and
// twemproxy pointed at the current masters. This file only builds the CLI;
// the work is done by the agent package and its children.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo"
	"github.com/urfave/cli/v2"
)

// exitError carries an exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	app := newApp()
	if err := app.Run(os.Args); err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if err.Error() != "" {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(code)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:            "redis-consul-agent",
		Usage:           "keep Redis, Sentinel and twemproxy in Consul, and twemproxy on the current masters",
		Version:         buildinfo.Version,
		HideVersion:     true,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			agentCommand(),
			validateCommand(),
			renderCommand(),
			statusCommand(),
			demoCommand(),
			{
				Name:  "version",
				Usage: "print the version, commit and Go version",
				Action: func(c *cli.Context) error {
					fmt.Fprintln(c.App.Writer, buildinfo.String())
					return nil
				},
			},
		},
	}
}
