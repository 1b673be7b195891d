package ctl

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// mainRun runs Main and returns its exit code, stdout and stderr.
func mainRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestMain_Help: --help and help print on stdout and exit 0, for the root
// and for every command, which is never run.
func TestMain_Help(t *testing.T) {
	t.Parallel()
	// No server answers on port 1: a command that ran would fail.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Usage:\n  conductorctl [flags]\n  conductorctl [command]"},
		{[]string{"help"}, "Pools and hosts:"},
		{nil, "Jobs:"},
		{[]string{"job", "--help"}, "conductorctl job ID"},
		{[]string{"pools", "--help"}, "conductorctl pools"},
		{[]string{"submit", "--help"}, "submit [--wait[=D]] [--key K] [--priority P] TYPE PAYLOAD"},
		{[]string{"help", "upgrade"}, "-- CMD [ARG...]"},
		{[]string{"upgrade", "-h"}, "--health duration"},
		{[]string{"lookup", "set", "--help"}, "set NAME KEY VALUE"},
		{[]string{"logs", "--help"}, "--tail int"},
		{[]string{"--version"}, "conductorctl devel"},
		{[]string{"completion", "bash"}, "bash completion V2 for conductorctl"},
		{[]string{"completion", "zsh"}, "#compdef conductorctl"},
		{[]string{"completion", "fish"}, "complete -c conductorctl"},
	} {
		code, out, errOut := mainRun(t, append([]string{"--server", "127.0.0.1:1"}, tc.args...)...)
		require.Equal(t, 0, code, "%v: %s", tc.args, errOut)
		require.Contains(t, out, tc.want, "%v", tc.args)
		require.Empty(t, errOut, "%v", tc.args)
	}
}

// TestMain_UsageErrors: a command line conductorctl cannot run exits 2
// with the error and the command's usage on stderr, and calls nothing.
func TestMain_UsageErrors(t *testing.T) {
	t.Parallel()
	called := make(chan string, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { called <- r.URL.Path }))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		args      []string
		want, use string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`, "conductorctl [flags]"},
		{[]string{"wrokers"}, `unknown command "wrokers"; did you mean workers?`, "conductorctl [flags]"},
		{[]string{"jobs", "--json"}, "unknown flag: --json (for JSON, use -o json)", "conductorctl jobs"},
		{[]string{"jobs", "--kind", "x"}, "unknown flag: --kind", "conductorctl jobs [--status"},
		{[]string{"job"}, "usage: conductorctl job ID", "conductorctl job ID"},
		{[]string{"job", "a", "b"}, "usage: conductorctl job ID", "conductorctl job ID"},
		{[]string{"pools", "extra"}, "usage: conductorctl pools", "conductorctl pools"},
		{[]string{"pools", "-o", "yaml"}, `want table, json or wide, not "yaml"`, "conductorctl pools"},
		{[]string{"submit", "--wait=soon", "squares", "7"}, `want a duration such as 30s, at most 10m0s, got "soon"`, "conductorctl submit"},
		{[]string{"submit", "-f", "x.jsonl", "squares", "7"}, "usage: conductorctl submit", "conductorctl submit"},
		{[]string{"submit", "-f", "x.jsonl", "--wait", "squares"}, "submit -f takes neither --wait nor --key", "conductorctl submit"},
		{[]string{"submit", "--chunk", "5", "squares", "7"}, "--chunk and --quiet go with -f", "conductorctl submit"},
		{[]string{"resize", "squares", "many"}, `N must be a number of workers`, "conductorctl resize POOL N"},
		{[]string{"lookup"}, "usage: conductorctl lookup", "conductorctl lookup"},
		{[]string{"lookup", "frob"}, `unknown lookup command "frob"`, "conductorctl lookup"},
		{[]string{"logs"}, "usage: conductorctl logs POOL", "conductorctl logs"},
		{[]string{"logs", "squares", "--tail", "-3"}, "--tail: want 0 to 1000 lines", "conductorctl logs"},
		{[]string{"top", "--interval", "0s"}, "--interval: want a duration over 0", "conductorctl top"},
		{[]string{"pools", "--server", "ftp://h:1"}, `--server "ftp://h:1": want http://HOST:PORT`, "conductorctl pools"},
		{[]string{"pools", "--log-level", "loud"}, `--log-level "loud": bad value: want debug, info, warn or error`, "conductorctl pools"},
		{[]string{"pools", "--log-format", "xml"}, `--log-format "xml": bad value: want text or json`, "conductorctl pools"},
	} {
		args := append([]string{"--server", srv.URL}, tc.args...)
		if tc.args[0] == "pools" && len(tc.args) > 2 && tc.args[1] == "--server" {
			args = tc.args
		}
		code, out, errOut := mainRun(t, args...)
		require.Equal(t, ExitUsage, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
		require.Contains(t, errOut, "Usage:\n  "+tc.use, "%v", tc.args)
	}
	require.Empty(t, called, "no usage error calls the API")
}

// TestMain_Errors: the errors of a call name their cause and the way out,
// and exit 1.
func TestMain_Errors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer tok":
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":"credential web (submitter) may not do this: it needs the operator role"}`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"missing or wrong token"}`)
		}
	}))
	t.Cleanup(srv.Close)

	code, _, errOut := mainRun(t, "--server", srv.URL, "pools")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "GET /v1/pools: missing or wrong token (401 Unauthorized): no token was given; "+
		"give conductord's token with --token-file FILE, CONDUCTOR_TOKEN or --token")
	code, _, errOut = mainRun(t, "--server", srv.URL, "--token", "nope", "pools")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "conductord refused the token of --token; give conductord's token with --token-file FILE")
	code, _, errOut = mainRun(t, "--server", srv.URL, "--token", "tok", "drain", "squares")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "POST /v1/pools/squares/drain: credential web (submitter) may not do this: it needs the operator role (403 Forbidden)")
	require.NotContains(t, errOut, "Usage:")

	// A port nothing listens on: a listener closed at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	code, out, errOut := mainRun(t, "--server", addr, "workers")
	require.Equal(t, ExitFailure, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "conductorctl: cannot reach conductord at http://"+addr+": dial tcp "+addr+": connect: connection refused (set --server or CONDUCTOR_SERVER)")
}

func TestServerURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                       defaultServer,
		"localhost:7070":         "http://localhost:7070",
		"http://h:1":             "http://h:1",
		"https://h.example:443/": "https://h.example:443",
		"[::1]:7070":             "http://[::1]:7070",
	} {
		got, err := serverURL(in, "--server")
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"ftp://h:1", "http://", "://x"} {
		_, err := serverURL(bad, "--server")
		require.ErrorAs(t, err, new(*UsageError), bad)
	}
}

func TestHumanise(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 512: "512 B", 1536: "1.5 KiB", 7 << 20: "7.0 MiB", 5 << 30: "5.0 GiB"} {
		require.Equal(t, want, size(n), n)
	}
	for d, want := range map[time.Duration]string{
		450 * time.Millisecond: "450ms", 12 * time.Second: "12s", 3*time.Minute + 12*time.Second: "3m12s",
		3*time.Minute + 10*time.Second: "3m10s", 5*time.Hour + 4*time.Minute: "5h4m", 74 * time.Hour: "3d2h",
	} {
		require.Equal(t, want, human(d), d)
	}
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	require.Equal(t, "3m12s ago", ago(now.Add(-192*time.Second), now))
	require.Equal(t, "in 5s", ago(now.Add(5*time.Second), now))
	require.Equal(t, "-", ago(time.Time{}, now))
	require.True(t, strings.HasSuffix(durationCell("1m2.5s"), "s"))
}

// help and completion run whatever the environment says of the server.
func TestMain_HelpNeedsNoServer(t *testing.T) {
	t.Setenv("CONDUCTOR_SERVER", "ftp://nowhere")
	for _, args := range [][]string{{"help"}, {"help", "pools"}, {"completion", "bash"}, {}} {
		code, out, errOut := mainRun(t, args...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		require.NotEmpty(t, out)
	}
	code, _, errOut := mainRun(t, "pools")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, errOut, `CONDUCTOR_SERVER "ftp://nowhere"`)
}

func TestProgress(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	p := newProgress(&b, true, false, 10)
	p.add(5)
	p.done()
	require.Regexp(t, `^\r\[#{15}\.{15}\]  50% 5/10 jobs \d+ jobs/s \n$`, b.String())
	b.Reset()
	p = newProgress(&b, false, false, 10)
	p.add(5)
	p.done()
	require.Empty(t, b.String(), "not a terminal: a line every 5s, not at once")
	p = newProgress(&b, true, true, 10)
	p.add(5)
	p.done()
	require.Empty(t, b.String(), "quiet")
}

// version without a conductord: conductorctl's build, and why not the
// server's; not an error.
func TestVersion_NoServer(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	code, out, errOut := mainRun(t, "--server", addr, "version")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^conductorctl\s+devel`, out)
	require.Contains(t, out, "conductord    unknown: cannot reach conductord at http://"+addr)
}

// An https server whose issuer conductorctl does not trust: the error says
// so, and how to trust it.
func TestMain_UntrustedCertificate(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	t.Cleanup(srv.Close)
	code, _, errOut := mainRun(t, "--server", srv.URL, "pools")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "conductord at "+srv.URL+": its certificate is not trusted: tls: failed to verify certificate")
	require.Contains(t, errOut, "(give its issuer with --tls-ca or CONDUCTOR_TLS_CA)")
}
