package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/internal/tlsconf/tlstest"
	"github.com/conductor-run/conductor/pkg/client"
)

// credCluster is one conductord with credentials issued by `conductord
// creds`, plain or TLS (https and NATS over TLS), and the clients that
// talk to it as one credential or another. The harness's cluster speaks
// plain HTTP with one shared token, so these tests keep their own.
type credCluster struct {
	t         *testing.T
	data      string
	natsAddr  string
	httpAddr  string
	certs     *tlstest.Certs // nil: plain
	http      *http.Client
	conductor *proc
}

// newCredCluster makes conductord's data directory and addresses, and
// the HTTP client (trusting certs.CA if certs is not nil); the
// conductor is started by start, once credentials are issued.
func newCredCluster(t *testing.T, certs *tlstest.Certs) *credCluster {
	t.Helper()
	addrs := freeAddrs(t, 2)
	c := &credCluster{t: t, data: t.TempDir(), natsAddr: addrs[0], httpAddr: addrs[1], certs: certs}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if certs != nil {
		cfg, err := tlsconf.Client(tlsconf.Files{CA: certs.CA})
		require.NoError(t, err)
		tr.TLSClientConfig = cfg
	}
	c.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// creds runs `conductord creds ARGS --data DATA` (the flags before the
// id) and returns its standard output; it fails the test if it fails.
func (c *credCluster) creds(args ...string) string {
	c.t.Helper()
	stdout, stderr, err := c.credsRun(args...)
	require.NoError(c.t, err, "conductord creds %v: %s", args, stderr)
	return stdout
}

// credsRun runs `conductord creds CMD --data DATA REST...`.
func (c *credCluster) credsRun(args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	full := append([]string{"creds", args[0], "--data", c.data}, args[1:]...)
	return runBin(c.t, "conductord", full...)
}

// runBin runs a binary to its end (within 30s) and returns its outputs.
func runBin(t *testing.T, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	require.NoError(t, ctx.Err(), "%s %v did not end within 30s", name, args)
	return out.String(), errb.String(), err
}

// issue adds a credential and returns its token, read from stdout.
func (c *credCluster) issue(id, role string, flags ...string) string {
	c.t.Helper()
	out := c.creds(append(append([]string{"add", "--role", role}, flags...), id)...)
	tok := strings.TrimSpace(out)
	require.Regexp(c.t, `^cdt\.`+regexp.QuoteMeta(id)+`\.[^.\s]+$`, tok, "the token printed by creds add")
	return tok
}

// issueTo adds a credential whose token goes to a new file (--out) and
// returns the file, checking its mode and format.
func (c *credCluster) issueTo(id, role string, flags ...string) string {
	c.t.Helper()
	file := filepath.Join(c.t.TempDir(), id+".token")
	out := c.creds(append(append([]string{"add", "--role", role, "--out", file}, flags...), id)...)
	require.Empty(c.t, out, "creds add --out prints no token")
	fi, err := os.Stat(file)
	require.NoError(c.t, err)
	require.Equal(c.t, os.FileMode(0o600), fi.Mode().Perm(), "--out file mode")
	b, err := os.ReadFile(file)
	require.NoError(c.t, err)
	require.Regexp(c.t, `^cd[th]\.`+regexp.QuoteMeta(id)+`\.[^.\s]+\n$`, string(b)) // cdh: a host's
	return file
}

func (c *credCluster) scheme() string {
	if c.certs != nil {
		return "https"
	}
	return "http"
}

func (c *credCluster) url(path string) string { return c.scheme() + "://" + c.httpAddr + path }

func (c *credCluster) natsURL() string {
	if c.certs != nil {
		return "tls://" + c.natsAddr
	}
	return "nats://" + c.natsAddr
}

// start runs conductord (TLS with mutual TLS on NATS if certs are set)
// and waits until /healthz answers.
func (c *credCluster) start() {
	c.t.Helper()
	args := []string{"--data", c.data, "--nats", c.natsAddr, "--http", c.httpAddr}
	if c.certs != nil {
		args = append(args, "--tls-cert", c.certs.ServerCert, "--tls-key", c.certs.ServerKey,
			"--tls-ca", c.certs.CA, "--tls-verify")
	}
	c.conductor = start(c.t, "conductord", args...)
	require.Eventually(c.t, func() bool {
		resp, err := c.http.Get(c.url("/healthz"))
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "conductord did not become healthy")
}

// do calls the API with token (none if empty) and returns the status and
// the body; out, if not nil, is decoded from a 2xx body.
func (c *credCluster) do(token, method, path, body string, out any) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url(path), strings.NewReader(body))
	require.NoError(c.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	require.NoError(c.t, err, "%s %s", method, path)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(c.t, json.Unmarshal(raw, out), "decode %s %s: %s", method, path, raw)
	}
	return resp.StatusCode, string(raw)
}

// workers lists /v1/workers as token (an operator's or admin's).
func (c *credCluster) workers(token string) []client.Worker {
	c.t.Helper()
	var ws []client.Worker
	code, body := c.do(token, http.MethodGet, "/v1/workers", "", &ws)
	require.Equal(c.t, http.StatusOK, code, body)
	return ws
}

// hostUp reports whether host has a squares worker ready or busy.
func (c *credCluster) hostUp(token, host string) bool {
	for _, w := range c.workers(token) {
		if w.Host == host && w.Pool == "squares" && (w.State == "ready" || w.State == "busy") {
			return true
		}
	}
	return false
}

// hostListed reports whether host has any live worker in /v1/workers
// (not one listed lost: its host silent).
func (c *credCluster) hostListed(token, host string) bool {
	for _, w := range c.workers(token) {
		if w.Host == host && w.State != client.WorkerLost {
			return true
		}
	}
	return false
}

// workerd starts a workerd of host with one squares worker, its token
// from tokenFile; tlsArgs are its --tls-* flags.
func (c *credCluster) workerd(host, tokenFile string, tlsArgs ...string) *proc {
	c.t.Helper()
	args := []string{"--conductor", c.natsURL(), "--host-id", host, "--token-file", tokenFile, "--pool", squares(1)}
	return start(c.t, "workerd", append(args, tlsArgs...)...)
}

// ctl runs conductorctl as the credential of tokenFile, over https with
// the CA if TLS, and returns its combined output and exit error.
func (c *credCluster) ctl(tokenFile string, args ...string) (string, error) {
	c.t.Helper()
	pre := []string{"--server", c.url(""), "--token-file", tokenFile}
	if c.certs != nil {
		pre = append(pre, "--tls-ca", c.certs.CA)
	}
	stdout, stderr, err := runBin(c.t, "conductorctl", append(pre, args...)...)
	return stdout + stderr, err
}

// exitCode is err's exit code, failing the test if err is not an exit.
func exitCode(t *testing.T, err error, out string) int {
	t.Helper()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "want a non-zero exit, got %v: %s", err, out)
	return exit.ExitCode()
}

// TestCluster_RolesAndTLS runs conductord with TLS on NATS (mutual) and
// HTTPS, and credentials issued by `conductord creds add`; a real
// workerd with the host credential and a client certificate, and
// conductorctl over https, each do what their role allows and are
// refused what it does not; a workerd without a client certificate the
// CA signed is refused at the handshake and never listed, and one whose
// credential names another host id is refused its heartbeats. (That the
// refused workerd says why in its log is a known gap: the subtest
// WorkerdLogsTLSRefusal checks that it says so.)
func TestCluster_RolesAndTLS(t *testing.T) {
	certs := tlstest.New(t)
	c := newCredCluster(t, &certs)

	admin := c.issue("root", "admin")
	operator := c.issue("ops", "operator")
	subFile := c.issueTo("web", "submitter", "--types", "squares")
	h1File := c.issueTo("h1", "host", "--types", "squares")
	h2File := c.issueTo("h2", "host", "--types", "squares")
	h3File := c.issueTo("h3", "host", "--types", "squares")
	mismatchFile := c.issueTo("h4", "host", "--types", "squares", "--host-id", "h4-real")
	sub := readToken(t, subFile)
	host := readToken(t, h1File)

	fi, err := os.Stat(filepath.Join(c.data, "credentials.json"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "credentials.json mode")
	list := c.creds("list")
	require.Regexp(t, `(?m)^ID +ROLE +TYPES +HOST ID +NAMESPACE +CREATED$`, list)
	require.Regexp(t, `(?m)^root +admin +\* +- +- `, list)
	require.Regexp(t, `(?m)^ops +operator +\* +- +- `, list)
	require.Regexp(t, `(?m)^web +submitter +squares +- +- `, list)
	require.Regexp(t, `(?m)^h1 +host +squares +h1 +- `, list)
	require.Regexp(t, `(?m)^h4 +host +squares +h4-real +- `, list)
	require.NotContains(t, list, "cdt.", "list shows no token")

	c.start()
	tlsArgs := []string{"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey}

	// Bad workerds first, so that they retry while the rest runs: no
	// client certificate, one of another CA, and a good certificate with
	// a credential whose host id is not the workerd's.
	noCert := c.workerd("h2", h2File, "--tls-ca", certs.CA)
	otherCert := c.workerd("h3", h3File, "--tls-ca", certs.CA, "--tls-cert", certs.OtherCert, "--tls-key", certs.OtherKey)
	mismatch := c.workerd("h4-wrong", mismatchFile, tlsArgs...)

	// The good workerd: its host credential, its client certificate.
	w := c.workerd("h1", h1File, tlsArgs...)
	require.Eventually(t, func() bool { return c.hostUp(operator, "h1") }, 30*time.Second, 20*time.Millisecond,
		"workerd h1 (host credential, client certificate) in /v1/workers: %+v\n%s", c.workers(admin), w.output())

	// conductorctl over https as the submitter: a squares job and its result.
	out, err := c.ctl(subFile, "submit", "--wait=30s", "squares", "7")
	require.NoError(t, err, out)
	require.Contains(t, out, `"status": "succeeded"`, out)
	require.Regexp(t, `"result": 49\b`, out)
	id := regexp.MustCompile(`"id": "([^"]+)"`).FindStringSubmatch(out)
	require.NotNil(t, id, out)
	out, err = c.ctl(subFile, "job", id[1])
	require.NoError(t, err, out)
	require.Contains(t, out, `"status": "succeeded"`)
	out, err = c.ctl(subFile, "jobs", "--type", "squares")
	require.NoError(t, err, out)
	require.Contains(t, out, id[1])

	// ... and refused what is an operator's, with the reason.
	for _, args := range [][]string{{"pools"}, {"workers"}, {"drain", "squares"}, {"resize", "squares", "2"}, {"retry", id[1]}} {
		out, err := c.ctl(subFile, args...)
		require.NotZero(t, exitCode(t, err, out), "conductorctl %v as a submitter", args)
		require.Contains(t, out, "credential web (submitter) may not do this: it needs the operator role", "conductorctl %v", args)
		require.Contains(t, out, "403", "conductorctl %v", args)
	}
	out, err = c.ctl(subFile, "submit", "cubes", "2")
	require.NotZero(t, exitCode(t, err, out), out)
	require.Contains(t, out, `credential web may not use job type "cubes"`)
	require.Contains(t, out, "403")
	// Nothing was drained: the pool still runs its worker.
	require.True(t, c.hostUp(admin, "h1"))

	// conductorctl that does not trust the server's issuer is refused by TLS.
	stdout, stderr, err := runBin(t, "conductorctl", "--server", c.url(""), "--token-file", subFile, "--tls-ca", certs.OtherCA, "job", id[1])
	require.NotZero(t, exitCode(t, err, stdout+stderr))
	require.Contains(t, stderr, "certificate")

	// The HTTP API by role, over https.
	var job struct{ ID, Type, Status string }
	code, body := c.do(sub, "POST", "/v1/jobs/squares?wait=30s", "5", &job)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "succeeded", job.Status, body)
	code, body = c.do(admin, "POST", "/v1/jobs/cubes", "5", &job) // a type the submitter may not see
	require.Equal(t, http.StatusAccepted, code, body)
	cubes := job.ID
	for _, tc := range []struct {
		who, token, method, path string
		want                     int
	}{
		{"no token", "", "GET", "/v1/jobs/" + id[1], http.StatusUnauthorized},
		{"a wrong token", "cdt.web.wrong", "GET", "/v1/jobs/" + id[1], http.StatusUnauthorized},
		{"the submitter", sub, "GET", "/v1/jobs/" + id[1], http.StatusOK},
		{"the submitter", sub, "GET", "/v1/jobs/" + cubes, http.StatusNotFound},
		{"the submitter", sub, "GET", "/v1/jobs?type=squares", http.StatusOK},
		{"the submitter", sub, "GET", "/v1/jobs?type=cubes", http.StatusForbidden},
		{"the submitter", sub, "GET", "/v1/jobs", http.StatusForbidden},
		{"the submitter", sub, "POST", "/v1/jobs/cubes", http.StatusForbidden},
		{"the submitter", sub, "POST", "/v1/jobs/" + cubes + "/cancel", http.StatusNotFound},
		{"the submitter", sub, "GET", "/v1/pools", http.StatusForbidden},
		{"the submitter", sub, "GET", "/v1/workers", http.StatusForbidden},
		{"the submitter", sub, "GET", "/v1/events", http.StatusForbidden},
		{"the submitter", sub, "POST", "/v1/pools/squares/drain", http.StatusForbidden},
		{"the host", host, "GET", "/v1/jobs/" + id[1], http.StatusForbidden},
		{"the host", host, "POST", "/v1/jobs/squares", http.StatusForbidden},
		{"the host", host, "GET", "/v1/workers", http.StatusForbidden},
		{"the operator", operator, "GET", "/v1/pools", http.StatusOK},
		{"the operator", operator, "GET", "/v1/jobs/" + cubes, http.StatusOK},
		{"the operator", operator, "GET", "/v1/jobs", http.StatusOK},
		{"the admin", admin, "GET", "/v1/workers", http.StatusOK},
		{"the admin", admin, "GET", "/v1/jobs/" + id[1], http.StatusOK},
	} {
		body := ""
		if tc.method == "POST" {
			body = "1"
		}
		code, got := c.do(tc.token, tc.method, tc.path, body, nil)
		require.Equal(t, tc.want, code, "%s: %s %s: %s", tc.who, tc.method, tc.path, got)
	}
	// The submitter may cancel a job of its type: the ended one is 409
	// (allowed, but over), not 403.
	code, body = c.do(sub, "POST", "/v1/jobs/"+id[1]+"/cancel", "", nil)
	require.Equal(t, http.StatusConflict, code, body)

	// Plain HTTP to the https port is not served.
	if resp, err := http.Get("http://" + c.httpAddr + "/v1/workers"); err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP to the TLS port")
	}

	// The workerds without a client certificate of the CA are refused at
	// the handshake (conductord says so: Go's client sends no certificate
	// the server's CA did not sign), and the one whose credential names
	// another host id is refused its heartbeats (its log says so); none of
	// them is ever listed, nor is the credential's own host id.
	require.Eventually(t, func() bool {
		return strings.Count(c.conductor.output(), `TLS handshake error: tls: client didn't provide a certificate" component=nats`) >= 2
	}, 20*time.Second, 50*time.Millisecond, "conductord refuses the handshakes of the workerds without a certificate of its CA")
	require.Eventually(t, func() bool {
		return strings.Contains(mismatch.output(), "is --host-id the credential's host id") &&
			strings.Contains(mismatch.output(), "h4-wrong")
	}, 20*time.Second, 50*time.Millisecond, "workerd h4-wrong is refused its heartbeats:\n%s", mismatch.output())
	ws := c.workers(admin)
	for _, h := range []string{"h2", "h3", "h4-wrong", "h4-real"} {
		for _, w := range ws {
			require.NotEqual(t, h, w.Host, "host %s must not be listed: %+v", h, ws)
		}
	}
	for _, p := range []*proc{noCert, otherCert, mismatch} {
		select {
		case <-p.exited:
			t.Fatalf("a refused workerd exited: %v\n%s", p.err, p.output())
		default:
		}
	}

	// A workerd refused at the TLS handshake says why in its log, as it
	// does for a refused token.
	t.Run("WorkerdLogsTLSRefusal", func(t *testing.T) {
		for _, bad := range []*proc{noCert, otherCert} {
			require.Eventually(t, func() bool { return tlsRefused(bad.output()) }, 10*time.Second, 50*time.Millisecond,
				"workerd says its TLS handshake is refused:\n%s", bad.output())
		}
	})
}

// tlsRefused reports whether a workerd's log says its TLS handshake
// with the conductor was refused.
func tlsRefused(log string) bool {
	return strings.Contains(log, "cannot connect to the conductor: the TLS handshake failed")
}

func readToken(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestCluster_RevokeCutsAHost: `conductord creds revoke` of a running
// workerd's host credential closes its connection: workerd logs that it
// is refused, and the host leaves /v1/workers within seconds; a job
// queued after is not taken, and stays queued until a workerd with the
// credential issued again (creds add --replace) runs it. A revoked
// operator is refused over HTTP (401) within a second or so.
func TestCluster_RevokeCutsAHost(t *testing.T) {
	c := newCredCluster(t, nil)
	admin := c.issue("root", "admin")
	operator := c.issue("ops", "operator")
	hostFile := c.issueTo("h1", "host", "--types", "squares")
	oldHost := readToken(t, hostFile)
	c.start()

	w := c.workerd("h1", hostFile)
	require.Eventually(t, func() bool { return c.hostUp(admin, "h1") }, 30*time.Second, 20*time.Millisecond,
		"workerd h1 in /v1/workers:\n%s", w.output())
	var job struct {
		ID, Status string
		Result     json.RawMessage
	}
	code, body := c.do(admin, "POST", "/v1/jobs/squares?wait=30s", "6", &job)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "succeeded", job.Status, body)
	require.JSONEq(t, "36", string(job.Result))
	code, body = c.do(oldHost, "GET", "/v1/jobs/"+job.ID, "", nil)
	require.Equal(t, http.StatusForbidden, code, "a host credential has no HTTP API: %s", body)
	code, body = c.do(operator, "GET", "/v1/pools", "", nil)
	require.Equal(t, http.StatusOK, code, body)

	// Revoke the host and the operator while they are in use.
	revoked := time.Now()
	_, stderr, err := c.credsRun("revoke", "h1")
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "credential h1 revoked")
	_, stderr, err = c.credsRun("revoke", "ops")
	require.NoError(t, err, stderr)
	list := c.creds("list")
	require.NotRegexp(t, `(?m)^(h1|ops) `, list)
	require.Regexp(t, `(?m)^root +admin `, list)
	_, stderr, err = c.credsRun("revoke", "h1")
	require.Error(t, err, "revoking it again")
	require.Contains(t, stderr, "no credential h1")

	require.Eventually(t, func() bool {
		code, _ := c.do(operator, "GET", "/v1/pools", "", nil)
		return code == http.StatusUnauthorized
	}, 10*time.Second, 20*time.Millisecond, "the revoked operator refused over HTTP")
	code, _ = c.do(oldHost, "GET", "/v1/jobs/"+job.ID, "", nil)
	require.Equal(t, http.StatusUnauthorized, code, "the revoked host's token is no credential any more")

	const refused = "authentication failed: check --token / CONDUCTOR_TOKEN; retrying"
	require.Eventually(t, func() bool { return strings.Contains(w.output(), refused) }, 10*time.Second, 20*time.Millisecond,
		"workerd logs that its revoked credential is refused:\n%s", w.output())
	require.Eventually(t, func() bool { return !c.hostListed(admin, "h1") }, 10*time.Second, 50*time.Millisecond,
		"the revoked host leaves the live workers of /v1/workers: %+v", c.workers(admin))
	t.Logf("host h1 refused and gone from /v1/workers %s after the revoke", time.Since(revoked).Round(time.Millisecond))
	select {
	case <-w.exited:
		t.Fatalf("workerd exited when its credential was revoked: %v", w.err)
	default:
	}

	// A job queued now is not taken by the revoked host.
	code, body = c.do(admin, "POST", "/v1/jobs/squares", "8", &job)
	require.Equal(t, http.StatusAccepted, code, body)
	queued := job.ID
	status := func() string {
		var j struct{ Status string }
		code, body := c.do(admin, "GET", "/v1/jobs/"+queued, "", &j)
		require.Equal(t, http.StatusOK, code, body)
		return j.Status
	}
	require.Never(t, func() bool { return status() != "queued" }, 2*time.Second, 50*time.Millisecond,
		"the job queued after the revoke stays queued")

	// Issued again, in the same file: the running workerd read its token
	// at start and stays refused; restarted, it reads the new one and
	// runs the queued job.
	_, stderr, err = c.credsRun("add", "--role", "host", "--types", "squares", "--replace", "--out", hostFile, "h1")
	require.NoError(t, err, stderr)
	require.NotEqual(t, oldHost, readToken(t, hostFile))
	require.Equal(t, "queued", status())
	w.stop(t, 20*time.Second)
	w2 := c.workerd("h1", hostFile)
	require.Eventually(t, func() bool { return status() == "succeeded" }, 30*time.Second, 50*time.Millisecond,
		"the queued job runs on the host with its new credential:\n%s", w2.output())
	var done struct{ Result json.RawMessage }
	code, body = c.do(admin, "GET", "/v1/jobs/"+queued, "", &done)
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, "64", string(done.Result))
	require.Eventually(t, func() bool { return c.hostUp(admin, "h1") }, 10*time.Second, 20*time.Millisecond,
		"host h1 listed again with its new credential")
}
