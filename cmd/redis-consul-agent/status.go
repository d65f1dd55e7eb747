package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/seed42ef8afe/redis-consul-agent/agent/status"
	"github.com/seed42ef8afe/redis-consul-agent/agent/statusclient"
	"github.com/urfave/cli/v2"
)

// statusCommand asks a running agent over its HTTP API and prints the same
// picture as the dashboard: the cluster as Consul sees it, then this agent.
func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "ask a running agent for its status and the cluster it sees",
		Description: "Reads /v1/status and /v1/cluster from the agent's http.address and prints tables.\n" +
			"With --json it prints {\"status\": ..., \"cluster\": ...} as the agent served them.\n" +
			"Exits 1 when no agent answers.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "http-addr", Aliases: []string{"a"}, Value: "127.0.0.1:8765", EnvVars: []string{"RCA_HTTP_ADDR"},
				Usage: "the agent's http.address (`HOST:PORT` or URL)"},
			&cli.BoolFlag{Name: "json", Usage: "print the raw JSON, for scripts"},
		},
		Action: func(c *cli.Context) error {
			cl := statusclient.NewClient(c.String("http-addr"))
			snap, rawStatus, err := cl.Status(c.Context)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			cluster, rawCluster, cerr := cl.Cluster(c.Context)
			if c.Bool("json") {
				if cerr != nil {
					b, _ := json.Marshal(map[string]string{"error": cerr.Error()})
					rawCluster = b
				}
				var buf bytes.Buffer
				buf.WriteString(`{"status":`)
				buf.Write(bytes.TrimSpace(rawStatus))
				buf.WriteString(`,"cluster":`)
				buf.Write(bytes.TrimSpace(rawCluster))
				buf.WriteString("}")
				var out bytes.Buffer
				if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
					return &exitError{code: 1, err: fmt.Errorf("agent sent invalid JSON: %w", err)}
				}
				out.WriteByte('\n')
				_, err := c.App.Writer.Write(out.Bytes())
				return err
			}
			if cerr != nil {
				var ue *statusclient.UnreachableError
				if errors.As(cerr, &ue) {
					return &exitError{code: 1, err: cerr}
				}
				cluster.Error = "cannot read /v1/cluster: " + cerr.Error()
			}
			return statusclient.WriteText(c.App.Writer, status.Report{Status: snap, Cluster: cluster}, statusclient.TextOptions{})
		},
	}
}
