package falconet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Config says where the server is and how to authenticate. Set exactly one of UnixSocket or Address.
type Config struct {
	// UnixSocket is the daemon's socket, as a path or a unix:// URL. No TLS: the socket's file mode guards it.
	UnixSocket string
	// Address is host:port of an mTLS listener (Falco's usual port is 5060).
	Address string
	// CACert, ClientCert and ClientKey are PEM files, as written by `falconet certs init`.
	CACert, ClientCert, ClientKey string
	// ServerName is the name checked against the server certificate's SANs; default: the host of Address.
	ServerName string
	// DialTimeout bounds each connection attempt; default 10s.
	DialTimeout time.Duration
}

// ConfigError reports a configuration or certificate problem found before connecting.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

func configErrorf(format string, args ...any) error {
	return &ConfigError{Msg: fmt.Sprintf(format, args...)}
}

// socketPath strips an optional unix:// or unix: prefix.
func socketPath(s string) string {
	switch {
	case strings.HasPrefix(s, "unix://"):
		return strings.TrimPrefix(s, "unix://")
	case strings.HasPrefix(s, "unix:"):
		return strings.TrimPrefix(s, "unix:")
	}
	return s
}

func (c *Config) validate() error {
	if (c.UnixSocket == "") == (c.Address == "") {
		return configErrorf("set either a UNIX socket or a host:port address (not both, not neither)")
	}
	if c.UnixSocket != "" {
		if c.CACert != "" || c.ClientCert != "" || c.ClientKey != "" {
			return configErrorf("the UNIX socket takes no certificates: drop --ca/--cert/--key or use --addr")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return configErrorf("address %q is not host:port: %v", c.Address, err)
	}
	if c.CACert == "" || c.ClientCert == "" || c.ClientKey == "" {
		return configErrorf("mTLS needs a CA certificate, a client certificate and its key (--ca, --cert, --key)")
	}
	return nil
}

// tlsConfig loads and checks the certificate files, naming the file and the problem on any failure, so that a
// bad path or a mismatched key is reported before a handshake turns it into an opaque connection error.
func (c *Config) tlsConfig() (*tls.Config, error) {
	caPEM, err := os.ReadFile(c.CACert)
	if err != nil {
		return nil, configErrorf("cannot read CA certificate %s: %v", c.CACert, unwrapPathError(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, configErrorf("CA certificate %s holds no PEM certificate", c.CACert)
	}
	for _, p := range []string{c.ClientCert, c.ClientKey} {
		if _, err := os.Stat(p); err != nil {
			return nil, configErrorf("cannot read %s: %v", p, unwrapPathError(err))
		}
	}
	pair, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
	if err != nil {
		return nil, configErrorf("client certificate %s with key %s: %v", c.ClientCert, c.ClientKey, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, configErrorf("client certificate %s: %v", c.ClientCert, err)
	}
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return nil, configErrorf("client certificate %s expired on %s", c.ClientCert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, configErrorf("client certificate %s is not valid before %s", c.ClientCert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	// The server verifies our certificate against the CA it trusts, which `falconet certs init` makes the same
	// CA as ours: checking here turns the server's bare connection reset into a reason.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, configErrorf("client certificate %s does not chain to CA %s, so the server would refuse it: %v", c.ClientCert, c.CACert, err)
	}
	serverName := c.ServerName
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(c.Address)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      pool,
		Certificates: []tls.Certificate{pair},
		ServerName:   serverName,
	}, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
