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

func renderCommand() *cli.Command {
	return &cli.Command{Name: "render", Usage: "print the twemproxy configs the agent would write now", Flags: configFlags(), Action: notBuilt("render")}
}
