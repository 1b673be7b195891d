package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMain runs main when the test binary is started as conductorctl.
func TestMain(m *testing.M) {
	if os.Getenv("CONDUCTORCTL_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// The binary's exit codes are Main's: help 0, usage 2, any error 1.
func TestMain_ExitCodes(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	require.NoError(t, err)
	for _, tc := range []struct {
		args       []string
		code       int
		out, error string
	}{
		{[]string{"--help"}, 0, "Usage:", ""},
		{[]string{"pools", "--help"}, 0, "conductorctl pools", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"pools", "-o", "yaml"}, 2, "", "Usage:\n  conductorctl pools"},
		{[]string{"--server", "127.0.0.1:1", "pools"}, 1, "", "cannot reach conductord at http://127.0.0.1:1"},
	} {
		cmd := exec.Command(self, tc.args...)
		cmd.Env = append(os.Environ(), "CONDUCTORCTL_TEST_MAIN=1", "CONDUCTOR_SERVER=", "CONDUCTOR_TOKEN=")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
			code = exit.ExitCode()
		} else {
			require.NoError(t, err)
		}
		require.Equal(t, tc.code, code, "%v: %s", tc.args, errOut.String())
		require.Contains(t, out.String(), tc.out, "%v", tc.args)
		require.Contains(t, errOut.String(), tc.error, "%v", tc.args)
	}
}
