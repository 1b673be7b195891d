package conductor_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/internal/tlsconf/tlstest"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// startTLS starts a conductor serving NATS and HTTPS with the test's
// certificates, mutual TLS on NATS with verify, and one admin credential.
func startTLS(t *testing.T, certs tlstest.Certs, verify bool) (*conductor.Conductor, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.json")
	tok, err := auth.Add(path, auth.Credential{ID: "root", Role: auth.Admin}, false)
	require.NoError(t, err)
	cfg := conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", MemoryStorage: true, Credentials: path,
		TLSCert: certs.ServerCert, TLSKey: certs.ServerKey, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if verify {
		cfg.TLSCA, cfg.TLSVerify = certs.CA, true
	}
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	return c, tok
}

func natsURL(c *conductor.Conductor) string {
	// The server names itself nats://; the client upgrades as it says.
	return c.NATSURL()
}

// TestTLS_AcceptedAndRefused: with a certificate, the conductor speaks
// TLS only: a client that trusts its issuer connects and submits; one
// that does not, or that speaks plain TCP, is refused; HTTPS likewise.
func TestTLS_AcceptedAndRefused(t *testing.T) {
	t.Parallel()
	certs := tlstest.New(t)
	c, tok := startTLS(t, certs, false)

	nc, err := nats.Connect(natsURL(c), client.WithToken(tok), nats.RootCAs(certs.CA))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.True(t, nc.TLSRequired())
	cl, err := client.New(nc, client.Config{})
	require.NoError(t, err)
	_, err = cl.Submit(t.Context(), "squares", 3)
	require.NoError(t, err)

	_, err = nats.Connect(natsURL(c), client.WithToken(tok), nats.RootCAs(certs.OtherCA), nats.MaxReconnects(0))
	require.ErrorContains(t, err, "certificate", "a client that does not trust the server's issuer")
	_, err = nats.Connect(natsURL(c), client.WithToken(tok), nats.MaxReconnects(0))
	require.Error(t, err, "a client with the system's roots only")

	// HTTPS: trusted, untrusted, plain.
	url := "https://" + c.HTTPAddr() + "/v1/pools"
	get := func(cfg *tls.Config, url string) (*http.Response, error) {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		return (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	}
	trusted, err := tlsconf.Client(tlsconf.Files{CA: certs.CA})
	require.NoError(t, err)
	resp, err := get(trusted, url)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	other, err := tlsconf.Client(tlsconf.Files{CA: certs.OtherCA})
	require.NoError(t, err)
	_, err = get(other, url)
	require.ErrorContains(t, err, "certificate")
	resp, err = get(nil, strings.Replace(url, "https", "http", 1))
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP to the TLS port")
	}
}

// TestTLS_Mutual: with --tls-verify, a NATS client must present a
// certificate signed by the CA; the HTTP API takes one without.
func TestTLS_Mutual(t *testing.T) {
	t.Parallel()
	certs := tlstest.New(t)
	c, tok := startTLS(t, certs, true)

	nc, err := nats.Connect(natsURL(c), client.WithToken(tok), nats.RootCAs(certs.CA), nats.ClientCert(certs.ClientCert, certs.ClientKey))
	require.NoError(t, err)
	nc.Close()

	_, err = nats.Connect(natsURL(c), client.WithToken(tok), nats.RootCAs(certs.CA), nats.MaxReconnects(0))
	require.Error(t, err, "no client certificate")
	_, err = nats.Connect(natsURL(c), client.WithToken(tok), nats.RootCAs(certs.CA), nats.ClientCert(certs.OtherCert, certs.OtherKey), nats.MaxReconnects(0))
	require.Error(t, err, "a client certificate of another issuer")
	// A certificate is not a credential: without a token, refused.
	_, err = nats.Connect(natsURL(c), nats.RootCAs(certs.CA), nats.ClientCert(certs.ClientCert, certs.ClientKey), nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)

	trusted, err := tlsconf.Client(tlsconf.Files{CA: certs.CA})
	require.NoError(t, err)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = trusted
	resp, err := (&http.Client{Transport: tr}).Get("https://" + c.HTTPAddr() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestTLS_BadFiles: a conductor with half a key pair, a CA without
// --tls-verify, or --tls-verify without a CA, does not start.
func TestTLS_BadFiles(t *testing.T) {
	t.Parallel()
	certs := tlstest.New(t)
	for _, tc := range []struct {
		cfg  conductor.Config
		want string
	}{
		{conductor.Config{TLSCert: certs.ServerCert}, "both --tls-cert and --tls-key"},
		{conductor.Config{TLSCert: certs.ServerCert, TLSKey: certs.ClientKey}, "private key does not match"},
		{conductor.Config{TLSCert: certs.ServerCert, TLSKey: certs.ServerKey, TLSCA: certs.CA}, "give --tls-verify"},
		{conductor.Config{TLSCert: certs.ServerCert, TLSKey: certs.ServerKey, TLSVerify: true}, "needs --tls-ca"},
		{conductor.Config{TLSVerify: true}, "needs --tls-cert"},
		{conductor.Config{TLSCert: certs.ServerCert, TLSKey: certs.ServerKey, TLSCA: certs.ServerKey, TLSVerify: true}, "no PEM certificate"},
	} {
		tc.cfg.DataDir = t.TempDir()
		_, err := conductor.New(tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
}
