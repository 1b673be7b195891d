package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/cmdline"
	"github.com/conductor-run/conductor/internal/cmdline/cmdlinetest"
	"github.com/conductor-run/conductor/internal/names"
)

// warning is workerd's warning about --token on the command line.
const warning = "--token on the command line is visible to every local user in the process list; use --token-file or CONDUCTOR_TOKEN"

// TestRun_Flags runs workerd with flags that end it before it connects.
// Not parallel: it sets CONDUCTOR_TOKEN.
func TestRun_Flags(t *testing.T) {
	t.Setenv(names.EnvToken, "from-env")
	missing := filepath.Join(t.TempDir(), "token")
	pool := []string{"--cgroups", "off", "--conductor", "nats://127.0.0.1:1", "--pool", "name=a,count=3,cmd=/bin/true"}
	for _, tc := range []struct {
		name    string
		args    []string
		want    string
		warning bool
	}{
		{"TokenFlagWarns", []string{"--token", "x"}, "no pools", true},
		{"EnvDoesNotWarn", nil, "no pools", false},
		{"TokenFileBeatsEnv", append([]string{"--token-file", missing}, pool...), "token file: open " + missing, false},
		{"TokenAndTokenFile", append([]string{"--token", "x", "--token-file", missing}, pool...), "give a token or a token file, not both", true},
		{"MaxPoolSize", append([]string{"--max-pool-size", "2"}, pool...), `pool "a": count 3 is more than this host's maximum pool size, 2 (workerd --max-pool-size)`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tc.args, io.Discard, &out)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, tc.warning, bytes.Contains(out.Bytes(), []byte(warning)), out.String())
		})
	}
}

func TestMain(m *testing.M) { cmdlinetest.Main(m, main) }

// TestMain_ExitCodes runs workerd (this test binary, see TestMain): a bad
// --log-format or --log-level exits 2 with the usage on stderr, --version
// exits 0 with the version on stdout.
func TestMain_ExitCodes(t *testing.T) {
	t.Parallel()
	cmdlinetest.CheckExitCodes(t, "workerd")
}

// TestRun_Version prints workerd's version on stdout and starts nothing.
func TestRun_Version(t *testing.T) {
	t.Parallel()
	cmdlinetest.CheckVersion(t, "workerd", run)
}

// TestRun_UsageErrors: a bad --log-format or --log-level, an unknown flag
// or an argument exits 2, with the error and the usage on stderr; -h
// exits 0.
func TestRun_UsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"--log-format", "xml"}, 2, `--log-format "xml": bad value: want text or json`},
		{[]string{"--log-level", "loud"}, 2, `--log-level "loud": bad value: want debug, info, warn or error`},
		{[]string{"--no-such-flag"}, 2, "flag provided but not defined: -no-such-flag"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"-h"}, 0, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			require.Error(t, err)
			var said bytes.Buffer
			require.Equal(t, tc.code, cmdline.ExitCode("workerd", err, &said))
			require.Empty(t, said.String(), "run said it already")
			require.Contains(t, stderr.String(), tc.err)
			require.Contains(t, stderr.String(), "Usage of workerd:")
			require.Contains(t, stderr.String(), "-log-format")
			require.Empty(t, stdout.String())
		})
	}
	var said bytes.Buffer
	require.Equal(t, 1, cmdline.ExitCode("workerd", io.ErrUnexpectedEOF, &said), "any other error")
	require.Equal(t, "workerd: unexpected EOF\n", said.String())
}

// TestRun_LogFormatJSON: --log-format json makes every log line a JSON
// object (here the warning about --token, before workerd finds no pools).
func TestRun_LogFormatJSON(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--log-format", "json", "--token", "x", "--cgroups", "off"}, io.Discard, &stderr)
	require.ErrorContains(t, err, "no pools")
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	require.NotEmpty(t, lines)
	for _, l := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), l)
	}
	require.Contains(t, stderr.String(), `"msg":"--token on the command line`)
}
