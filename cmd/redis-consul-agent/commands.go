package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/seed42ef8afe/redis-consul-agent/agent"
	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/urfave/cli/v2"
)

func configFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "YAML configuration `FILE`", Required: true, EnvVars: []string{"RCA_CONFIG"}},
		&cli.StringFlag{Name: "node-name", Usage: "override node_name"},
		&cli.StringFlag{Name: "consul-addr", Usage: "override consul.address"},
		&cli.StringFlag{Name: "http-addr", Usage: "override http.address"},
		&cli.StringFlag{Name: "log-level", Usage: "override log.level"},
		&cli.StringFlag{Name: "log-format", Usage: "override log.format (text or json)"},
	}
}

// loadConfig reads --config with env and flag overrides; a bad file is an
// exit code 2 error that lists every problem.
func loadConfig(c *cli.Context) (*config.Config, error) {
	cfg, err := config.Load(c.String("config"), os.Getenv, config.Overrides{
		NodeName:      c.String("node-name"),
		ConsulAddress: c.String("consul-addr"),
		HTTPAddress:   c.String("http-addr"),
		LogLevel:      c.String("log-level"),
		LogFormat:     c.String("log-format"),
	})
	if err != nil {
		var probs config.Problems
		if errors.As(err, &probs) {
			return nil, &exitError{code: 2, err: fmt.Errorf("%s: %w", c.String("config"), err)}
		}
		return nil, &exitError{code: 2, err: err}
	}
	return cfg, nil
}

func validateCommand() *cli.Command {
	return &cli.Command{
		Name:  "validate",
		Usage: "check a configuration file and print every problem",
		Flags: configFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			// Only a running HAProxy knows its backend and server names.
			probs, notes := agent.CheckHAProxy(c.Context, cfg)
			for _, n := range notes {
				fmt.Fprintln(c.App.Writer, n)
			}
			if len(probs) > 0 {
				return &exitError{code: 2, err: fmt.Errorf("%s: %w", c.String("config"), probs)}
			}
			fmt.Fprintf(c.App.Writer, "%s: configuration is valid\n", c.String("config"))
			return nil
		},
	}
}
