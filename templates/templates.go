// Package templates holds the files the agent renders, embedded in the binary
// so that a single file deploys everything and the dashboard makes no request
// outside the agent.
package templates

import "embed"

// Dashboard is the ops dashboard under dashboard/: html/template files
// (*.html, parsed by agent/httpapi) and the static assets they link (CSS,
// JavaScript, icons), served under /assets/.
//
//go:embed dashboard
var Dashboard embed.FS
