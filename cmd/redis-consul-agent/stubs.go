package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func notBuilt(name string) cli.ActionFunc {
	return func(*cli.Context) error {
		return &exitError{code: 3, err: fmt.Errorf("%s: not built yet", name)}
	}
}

func agentCommand() *cli.Command {
	return &cli.Command{Name: "agent", Usage: "run every role the config lists", Flags: configFlags(), Action: notBuilt("agent")}
}

func renderCommand() *cli.Command {
	return &cli.Command{Name: "render", Usage: "print the twemproxy configs the agent would write now", Flags: configFlags(), Action: notBuilt("render")}
}

func statusCommand() *cli.Command {
	return &cli.Command{Name: "status", Usage: "ask a running agent for its status", Action: notBuilt("status")}
}

func demoCommand() *cli.Command {
	return &cli.Command{Name: "demo", Usage: "run a local sandbox stack", Action: notBuilt("demo")}
}
