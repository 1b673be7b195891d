package conductor_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/internal/tlsconf/tlstest"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestNATSURL_MutualTLS: conductord reaches NATS servers of its own that
// speak TLS only and require a client certificate, with the CA and the
// certificate given (--nats-tls-ca, --nats-tls-cert, --nats-tls-key), and
// queues a job there.
func TestNATSURL_MutualTLS(t *testing.T) {
	t.Parallel()
	certs := tlstest.New(t)
	tlsConfig, err := tlsconf.Server(tlsconf.Files{Cert: certs.ServerCert, Key: certs.ServerKey, CA: certs.CA}, true)
	require.NoError(t, err)
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		TLS: true, TLSVerify: true, TLSConfig: tlsConfig,
	}
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })

	c, err := conductor.New(conductor.Config{
		DataDir: t.TempDir(), NATSURL: ns.ClientURL(), HTTPListen: "127.0.0.1:0",
		NATSTLSCA: certs.CA, NATSTLSCert: certs.ClientCert, NATSTLSKey: certs.ClientKey,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	id, err := c.Client().Submit(ctx, "squares", 3)
	require.NoError(t, err)
	j, err := c.Client().Job(ctx, id)
	require.NoError(t, err)
	require.Equal(t, "queued", string(j.Status))
}

// TestNATSURL_ClientFilesRefused: the files of a connection to NATS
// servers of one's own are refused without --nats-url, or when they cannot
// be read, each naming its flag.
func TestNATSURL_ClientFilesRefused(t *testing.T) {
	t.Parallel()
	certs := tlstest.New(t)
	for _, tc := range []struct {
		cfg  conductor.Config
		want string
	}{
		{conductor.Config{NATSTLSCA: certs.CA}, "are for NATS servers of your own (--nats-url)"},
		{conductor.Config{NATSCreds: "/no/such.creds"}, "are for NATS servers of your own (--nats-url)"},
		{conductor.Config{NATSURL: "nats://127.0.0.1:1", NATSCreds: "/no/such.creds"}, "--nats-creds: stat /no/such.creds: no such file or directory"},
		{conductor.Config{NATSURL: "nats://127.0.0.1:1", NATSTLSCert: certs.ClientCert}, "--nats-tls-*"},
		{conductor.Config{NATSURL: "nats://127.0.0.1:1", NATSTLSCA: certs.ClientKey}, "--nats-tls-*"},
	} {
		tc.cfg.DataDir = t.TempDir()
		_, err := conductor.New(tc.cfg)
		require.ErrorContains(t, err, tc.want, "%+v", tc.cfg)
	}
}
