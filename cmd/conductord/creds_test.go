package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/cmdline"
)

// TestCreds: add writes a token once (to standard output or --out, mode
// 0600) and keeps only its hash; list shows every credential, never a
// secret; revoke removes one; bad input is refused with its reason.
func TestCreds(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	run := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := creds(append(args[:1:1], append([]string{"--data", data}, args[1:]...)...), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	tok, msg, err := run("add", "--role", "submitter", "--types", "squares,cubes", "web")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(tok, "cdt.web."), tok)
	require.Contains(t, msg, "shown once")
	file, err := os.ReadFile(filepath.Join(data, auth.FileName))
	require.NoError(t, err)
	require.NotContains(t, string(file), strings.TrimSpace(strings.TrimPrefix(tok, "cdt.web.")), "the file keeps the secret")
	fi, err := os.Stat(filepath.Join(data, auth.FileName))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	out := filepath.Join(t.TempDir(), "h1.token")
	_, _, err = run("add", "--role", "host", "--host-id", "web-1", "--out", out, "h1")
	require.NoError(t, err)
	fi, err = os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	_, _, err = run("add", "--role", "host", "--out", out, "h2")
	require.ErrorContains(t, err, "file exists", "an existing token file is not overwritten")

	list, _, err := run("list")
	require.NoError(t, err)
	require.Contains(t, list, "web")
	require.Contains(t, list, "squares,cubes")
	require.Contains(t, list, "web-1")
	require.NotContains(t, list, "h2")

	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"add", "--role", "root", "x"}, `unknown role "root"`},
		{[]string{"add", "--role", "admin", "a b"}, "credential id"},
		{[]string{"add", "--role", "operator", "--types", "squares", "ops"}, "types are for a submitter or a host"},
		{[]string{"add", "--role", "submitter", "--host-id", "h", "s"}, "a host id is for a host credential"},
		{[]string{"add", "--role", "submitter", "web"}, "credential web exists"},
		{[]string{"add", "--role", "submitter"}, "want one credential id"},
		{[]string{"revoke", "nobody"}, "no credential nobody"},
		{[]string{"rotate"}, `unknown command "rotate"`},
	} {
		_, _, err := run(tc.args...)
		require.ErrorContains(t, err, tc.err, tc.args)
	}

	_, _, err = run("revoke", "web")
	require.NoError(t, err)
	list, _, err = run("list")
	require.NoError(t, err)
	require.NotContains(t, list, "squares,cubes")
}

// TestReview17b_CredsUsage: `conductord creds --help` exited 1 (an error)
// and `conductord creds`, `creds bogus` or `creds add --bogus` exited 1
// like a failure; help now exits 0 and prints the usage on stdout, and a
// command line creds cannot take is a usage error, exit 2, as for
// conductord itself.
func TestReview17b_CredsUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--help"}, 0, "conductord creds add --role ROLE", ""},
		{[]string{"-h"}, 0, "conductord creds add --role ROLE", ""},
		{[]string{"help"}, 0, "conductord creds add --role ROLE", ""},
		{[]string{"add", "-h"}, 0, "conductord creds add --role ROLE", ""},
		{nil, 2, "", "want add, list or revoke"},
		{[]string{"bogus"}, 2, "", `unknown command "bogus": want add, list or revoke`},
		{[]string{"add", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"add", "--role", "admin"}, 2, "", "creds add: want one credential id after the flags"},
		{[]string{"list", "extra"}, 2, "", `creds list: unexpected argument "extra"`},
		{[]string{"revoke"}, 2, "", "creds revoke: want one credential id"},
	} {
		var stdout, stderr, said bytes.Buffer
		err := creds(tc.args, &stdout, &stderr)
		require.Equal(t, tc.code, cmdline.ExitCode("conductord", err, &said), "%v: %v", tc.args, err)
		require.Contains(t, stdout.String(), tc.stdout, "%v", tc.args)
		require.Contains(t, stderr.String()+said.String(), tc.stderr, "%v", tc.args)
		if tc.code == 2 {
			require.Contains(t, stderr.String(), "usage:", "%v: the usage on stderr", tc.args)
		}
	}
}
