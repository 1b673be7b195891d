package ctl

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/conductor-run/conductor/internal/secret"
	"github.com/conductor-run/conductor/internal/tlsconf"
)

// defaultServer is the API conductorctl calls without --server or
// CONDUCTOR_SERVER: conductord's default --http.
const defaultServer = "http://127.0.0.1:7070"

// defaultRequestTimeout is --request-timeout's default: how long a call
// waits for conductord's answer (its status line and headers; a stream's
// body after them is not bounded).
const defaultRequestTimeout = 60 * time.Second

// client calls conductord's HTTP API and prints its answers on out, in
// the output format (table, json or wide).
type client struct {
	base, token string
	tokenFrom   string // where token came from: --token, --token-file FILE or CONDUCTOR_TOKEN
	http        *http.Client
	within      time.Duration // --request-timeout: 0, no limit
	out         io.Writer
	stdin       io.Reader // what an argument "-" reads
	output      string
	log         *slog.Logger
	now         func() time.Time // the clock of ages in tables
}

type clientConfig struct {
	server, token, tokenFile string
	// serverFrom and tokenFrom name where server and token came from, for
	// the errors (default --server and --token).
	serverFrom, tokenFrom string
	tls                   tlsconf.Files
	requestTimeout        time.Duration
	output                string
	out                   io.Writer
	stdin                 io.Reader
	log                   *slog.Logger
}

func newClient(cfg clientConfig) (*client, error) {
	base, err := serverURL(cfg.server, cmp.Or(cfg.serverFrom, "--server"))
	if err != nil {
		return nil, err
	}
	tlsConfig, err := tlsconf.Client(cfg.tls)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	transport.ResponseHeaderTimeout = cfg.requestTimeout
	token, tokenFrom := cfg.token, cmp.Or(cfg.tokenFrom, "--token")
	if cfg.tokenFile != "" {
		tok, shared, err := secret.ReadTokenFile(cfg.tokenFile)
		if err != nil {
			return nil, err
		}
		if shared {
			cfg.log.Warn("the token file may be read by other users of this host: chmod 600 it", "file", cfg.tokenFile)
		}
		token, tokenFrom = tok, "--token-file "+cfg.tokenFile
	}
	return &client{
		base: base, token: token, tokenFrom: tokenFrom, http: &http.Client{Transport: transport}, within: cfg.requestTimeout,
		out: cfg.out, stdin: cfg.stdin, output: cfg.output, log: cfg.log, now: time.Now,
	}, nil
}

// serverURL is the API's base URL from --server (or what from names):
// http://HOST:PORT, https://HOST:PORT, or a bare HOST:PORT taken as
// http://.
func serverURL(s, from string) (string, error) {
	if s == "" {
		return defaultServer, nil
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", usageErrorf("%s %q: want http://HOST:PORT, https://HOST:PORT or HOST:PORT", from, s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// do calls the API and prints its JSON answer, indented; into, if set,
// also receives it.
func (c *client) do(ctx context.Context, method, path string, body []byte, hdr http.Header, into any) error {
	raw, err := c.call(ctx, method, path, body, hdr)
	if err != nil {
		return err
	}
	if err := printJSON(c.out, raw); err != nil {
		return err
	}
	if into != nil {
		return json.Unmarshal(raw, into)
	}
	return nil
}

func (c *client) show(ctx context.Context, method, path string, body []byte, hdr http.Header) error {
	return c.do(ctx, method, path, body, hdr, nil)
}

// get calls GET path and returns its answer, or an error for a status of
// 300 or more.
func (c *client) get(ctx context.Context, path string) ([]byte, error) {
	return c.call(ctx, http.MethodGet, path, nil, nil)
}

// call calls the API and returns its answer, or an error for a status of
// 300 or more.
func (c *client) call(ctx context.Context, method, path string, body []byte, hdr http.Header) ([]byte, error) {
	resp, raw, err := c.send(ctx, method, path, body, hdr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, c.apiError(method, path, resp, raw)
	}
	return raw, nil
}

// send calls the API and returns its answer whatever the status.
func (c *client) send(ctx context.Context, method, path string, body []byte, hdr http.Header) (*http.Response, []byte, error) {
	resp, err := c.open(ctx, method, path, bodyReader(body), hdr)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read the answer of %s %s: %w", method, path, err)
	}
	return resp, raw, nil
}

func bodyReader(body []byte) io.Reader {
	if body == nil {
		return nil
	}
	return bytes.NewReader(body)
}

// open calls the API and returns the response, its body unread.
func (c *client) open(ctx context.Context, method, path string, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, c.unreachable(err)
	}
	c.log.Debug("api call", "method", method, "path", path, "status", resp.StatusCode, "took", time.Since(start))
	return resp, nil
}

// patient returns c with its time for an answer longer by extra: for a
// call that conductord answers at the end of a wait (submit --wait).
func (c *client) patient(extra time.Duration) *client {
	if c.within == 0 {
		return c
	}
	p := *c
	transport := c.http.Transport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = c.within + extra
	p.http = &http.Client{Transport: transport}
	p.within = transport.ResponseHeaderTimeout
	return &p
}

// unreachable is the error of a call that got no answer.
func (c *client) unreachable(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	// A time-out that is not the dial's is ResponseHeaderTimeout's.
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() && !errors.As(err, new(*net.OpError)) {
		return fmt.Errorf("conductord at %s did not answer within %s (--request-timeout)", c.base, c.within)
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return fmt.Errorf("conductord at %s: its certificate is not trusted: %w (give its issuer with --tls-ca or CONDUCTOR_TLS_CA)", c.base, err)
	}
	return fmt.Errorf("cannot reach conductord at %s: %w (set --server or CONDUCTOR_SERVER)", c.base, err)
}

// apiError is the error of an answer with a status of 300 or more: the
// API's message, if it sent one, and for a 401 where the token comes from.
func (c *client) apiError(method, path string, resp *http.Response, raw []byte) error {
	var e struct{ Error string }
	msg := resp.Status
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		msg = e.Error + " (" + resp.Status + ")"
	}
	if resp.StatusCode == http.StatusUnauthorized {
		given := "conductord refused the token of " + c.tokenFrom
		if c.token == "" {
			given = "no token was given"
		}
		return fmt.Errorf("%s %s: %s: %s; give conductord's token with --token-file FILE, CONDUCTOR_TOKEN or --token", method, path, msg, given)
	}
	return fmt.Errorf("%s %s: %s", method, path, msg)
}
