package sandbox

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Redis and Sentinel on TLS only: the config lines a server needs, and the
// client configs the sandbox's own helpers (readiness, Role, Sentinel
// queries, DoTLS) connect with.

// tlsServer prepares a redis-server or redis-sentinel called name on ip to
// serve TLS only on port: it issues the server a certificate from ca for ip
// (an IP SAN, so clients that connect by IP verify it without a server name)
// and for hostname, if any (RedisOptions.Hosts),
// and returns the redis.conf lines and the client config the sandbox's
// helpers use to reach it. The server requires a client certificate from ca
// (tls-auth-clients yes) and speaks TLS on every link it opens itself
// (tls-replication yes: a replica to its master, a Sentinel to the Redis
// nodes and the other Sentinels), presenting its own certificate, which is
// good for both ends. The lines come after the plain "port N" line, and a
// later line wins in redis.conf: "port 0" turns the plain port off.
func tlsServer(ca *CA, name, ip string, port int, hostname string) ([]string, *tls.Config, error) {
	var dnsNames []string
	if hostname != "" {
		dnsNames = append(dnsNames, hostname)
	}
	certFile, keyFile, err := ca.Issue(name, []string{ip}, dnsNames...)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS for %s: %w", name, err)
	}
	tc, err := ca.ClientTLS(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS for %s: %w", name, err)
	}
	lines := []string{
		"port 0", "tls-port " + strconv.Itoa(port),
		"tls-cert-file " + certFile, "tls-key-file " + keyFile, "tls-ca-cert-file " + ca.CertFile,
		"tls-auth-clients yes", "tls-replication yes",
	}
	return lines, tc, nil
}

// ClientTLS returns a client config that trusts ca only and presents the
// certificate in certFile/keyFile (nil names: no client certificate), for
// a test that talks to a TLS Redis or Sentinel itself (NewTLSClient,
// DoTLS). The server name is left empty, so Go checks the certificate
// against the host of the address dialled: an IP needs an IP SAN.
func (ca *CA) ClientTLS(certFile, keyFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		return nil, fmt.Errorf("client TLS: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client TLS: %s holds no certificate", ca.CertFile)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client TLS: load %s: %w", certFile, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// NewTLSClient is NewClient over TLS with tc (nil: plain TCP).
func NewTLSClient(addr, password string, tc *tls.Config) *redis.Client {
	return redis.NewClient(withTLS(clientOptions(addr, password), tc))
}

func withTLS(o *redis.Options, tc *tls.Config) *redis.Options {
	o.TLSConfig = tc
	return o
}
