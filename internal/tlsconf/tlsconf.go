// Package tlsconf builds the TLS configurations of conductor's binaries
// from certificate files (--tls-cert, --tls-key, --tls-ca): the server's
// (conductord's NATS and HTTPS) and the clients' (workerd, conductorctl,
// a Go program). See docs/security.md, "TLS".
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files of one side.
type Files struct {
	// Cert and Key are this side's certificate (with its chain) and
	// private key: the server's, or a client's for mutual TLS. Both or
	// neither.
	Cert, Key string
	// CA is the file of the certificates that authenticate the other side:
	// for a client, the server's issuer (default: the system's roots); for
	// the server, the issuer of the client certificates it requires.
	CA string
}

// Empty reports whether no file is named.
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.CA == "" }

func (f Files) keyPair() ([]tls.Certificate, error) {
	switch {
	case f.Cert == "" && f.Key == "":
		return nil, nil
	case f.Cert == "" || f.Key == "":
		return nil, errors.New("tls: give both --tls-cert and --tls-key, or neither")
	}
	kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", f.Cert, f.Key, err)
	}
	return []tls.Certificate{kp}, nil
}

func (f Files) pool() (*x509.CertPool, error) {
	if f.CA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: %s holds no PEM certificate", f.CA)
	}
	return p, nil
}

// Server returns the server's configuration: its certificate, and with
// verify the client certificates it requires, signed by CA. Nil for no
// files: no TLS.
func Server(f Files, verify bool) (*tls.Config, error) {
	if f.Empty() {
		if verify {
			return nil, errors.New("tls: --tls-verify needs --tls-cert, --tls-key and --tls-ca")
		}
		return nil, nil
	}
	certs, err := f.keyPair()
	if err != nil {
		return nil, err
	}
	if certs == nil {
		return nil, errors.New("tls: a server needs --tls-cert and --tls-key")
	}
	cfg := &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS12}
	pool, err := f.pool()
	if err != nil {
		return nil, err
	}
	switch {
	case verify && pool == nil:
		return nil, errors.New("tls: --tls-verify needs --tls-ca, the issuer of the client certificates")
	case verify:
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	case pool != nil:
		return nil, errors.New("tls: --tls-ca on the server is the issuer of client certificates: give --tls-verify to require them")
	}
	return cfg, nil
}

// Client returns a client's configuration: the server's issuer (CA, or
// the system's roots), and a certificate of its own for mutual TLS. Nil
// for no files: TLS only if the URL or the server asks for it, with the
// system's roots.
func Client(f Files) (*tls.Config, error) {
	if f.Empty() {
		return nil, nil
	}
	certs, err := f.keyPair()
	if err != nil {
		return nil, err
	}
	pool, err := f.pool()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: certs, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
