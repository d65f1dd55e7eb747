package sandbox

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
)

// TestCA: a certificate the CA issues verifies for its IPs and names and
// serves TLS; another CA's pool rejects it.
func TestCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.Issue("server", []string{"127.0.0.1"}, "server.dc1.consul")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(ca *CA) *x509.CertPool {
		b, err := os.ReadFile(ca.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(b) {
			t.Fatalf("%s: no certificate", ca.CertFile)
		}
		return p
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	other, err := NewCA(dir, "other")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		roots  *x509.CertPool
		server string
		ok     bool
	}{
		{"IP", pool(ca), "", true},
		{"DNS name", pool(ca), "server.dc1.consul", true},
		{"unknown name", pool(ca), "other.example", false},
		{"other CA", pool(other), "", false},
	} {
		host, _, _ := net.SplitHostPort(ln.Addr().String())
		if tc.server == "" {
			tc.server = host
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: tc.roots, ServerName: tc.server})
		if err == nil {
			c.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
