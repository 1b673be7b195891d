package conductor

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/pkg/client"
)

// checkNATSClient checks what conductord presents to NATS servers of its
// own (NATSURL): the TLS files and the credentials file apply there only.
func (c *Config) checkNATSClient() error {
	set := c.NATSTLSCA != "" || c.NATSTLSCert != "" || c.NATSTLSKey != "" || c.NATSCreds != ""
	if set && c.NATSURL == "" {
		return errors.New("conductor: --nats-tls-ca, --nats-tls-cert, --nats-tls-key and --nats-creds are for NATS servers of your own (--nats-url); the embedded server's TLS is --tls-cert, --tls-key and --tls-ca")
	}
	if c.NATSCreds != "" {
		if _, err := os.Stat(c.NATSCreds); err != nil {
			return fmt.Errorf("conductor: --nats-creds: %w", err)
		}
	}
	_, err := c.natsTLS()
	return err
}

// natsTLS is the TLS configuration of the connection to NATSURL: nil with
// none of the files, to use a tls:// URL with the system's roots.
func (c *Config) natsTLS() (*tls.Config, error) {
	cfg, err := tlsconf.Client(tlsconf.Files{CA: c.NATSTLSCA, Cert: c.NATSTLSCert, Key: c.NATSTLSKey})
	if err != nil {
		return nil, fmt.Errorf("conductor: --nats-tls-*: %w", err)
	}
	return cfg, nil
}

// probeNATS connects to url once, without the retries conductord's own
// connection makes, so that what no retry mends (a certificate its CA did
// not sign, a credentials file or token refused) fails the start at once
// and says why. Servers that cannot be reached are not such a failure:
// conductord's connection waits for them.
func probeNATS(url string, opts []nats.Option) error {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("conductord (probe)"), nats.Timeout(5 * time.Second)}, opts...)...)
	switch {
	case err == nil:
		nc.Close()
		return nil
	case errors.Is(err, nats.ErrNoServers):
		return nil
	default:
		return fmt.Errorf("conductor: connect to NATS (--nats-url %s; --nats-tls-*, --nats-creds, --token): %w", url, err)
	}
}

// natsClientOptions are the options of the connection to NATSURL: the
// token, the TLS files, the credentials file.
func (c *Config) natsClientOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if c.Token != "" {
		opts = append(opts, client.WithToken(c.Token))
	}
	tlsConfig, err := c.natsTLS()
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		opts = append(opts, nats.Secure(tlsConfig))
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	return opts, nil
}
