package config

import (
	"path/filepath"
	"testing"
)

// TestSentinelsInheritTLS: a sentinels entry without a tls section uses the
// sentinel section's (as its username and password_file do); one with its
// own keeps it.
func TestSentinelsInheritTLS(t *testing.T) {
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", "not read by Load\n")
	other := writeFile(t, dir, "other.pem", "not read by Load\n")
	cfg := writeFile(t, dir, "agent.yml", `
sentinel:
  addresses: [127.0.0.1:26379]
  tls: {enabled: true, ca_file: `+ca+`}
sentinels:
  - address: 127.0.0.1:26379
  - address: 127.0.0.1:26380
    tls: {enabled: true, ca_file: `+other+`, server_name: sentinel.example}
`)
	c, err := Load(cfg, noEnv, Overrides{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := c.Sentinels[0].TLS; !got.Enabled || got.CAFile != ca {
		t.Errorf("sentinels[0].tls = %+v, want the sentinel section's (enabled, ca_file %s)", got, filepath.Base(ca))
	}
	if got := c.Sentinels[1].TLS; got.CAFile != other || got.ServerName != "sentinel.example" {
		t.Errorf("sentinels[1].tls = %+v, want its own", got)
	}
}
