package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"
	"github.com/seed42ef8afe/redis-consul-agent/agent"
	"github.com/seed42ef8afe/redis-consul-agent/agent/config"
	"github.com/seed42ef8afe/redis-consul-agent/discovery"
	"github.com/urfave/cli/v2"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run every role the config lists until SIGTERM/SIGINT; SIGHUP reloads the file",
		Flags: configFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			logger := agent.NewLogger(cfg.Log, os.Stderr)
			// go-redis prints dial failures on every retry; keep them at debug.
			redis.SetLogger(discovery.RedisLog{Logger: logger.Named("go-redis")})
			a, err := agent.New(agent.Options{
				Config: cfg,
				Logger: logger,
				Reload: func() (*config.Config, error) {
					next, err := loadConfig(c)
					return next, err
				},
				SetLevel: func(level string) { logger.SetLevel(hclog.LevelFromString(level)) },
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reload <- struct{}{}:
					default:
					}
				}
			}()
			return a.Run(ctx, reload)
		},
	}
}
