// Package cmdlinetest checks, from a main package's tests, what the
// command lines of conductord and workerd share: the exit codes of the
// real binary (the test binary run again as the program), --version, and
// the usage of a bad log flag.
package cmdlinetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/cmdline"
	"github.com/conductor-run/conductor/internal/version"
)

// asMain is the environment variable that makes a test binary run its
// program's main instead of its tests.
const asMain = "CONDUCTOR_TEST_AS_MAIN"

// Main is a main package's TestMain: it runs main instead of the tests
// when CheckExitCodes runs the test binary as the program.
func Main(m *testing.M, main func()) {
	if os.Getenv(asMain) != "" {
		main()
		return
	}
	os.Exit(m.Run())
}

// CheckExitCodes runs the test binary as program name (its TestMain must
// be Main): a bad --log-format or --log-level exits 2 with the usage on
// stderr, --version exits 0 with the version on stdout.
func CheckExitCodes(t *testing.T, name string) {
	t.Helper()
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--log-format", "xml"}, 2, "", `--log-format "xml": bad value: want text or json`},
		{[]string{"--log-level", "loud"}, 2, "", `--log-level "loud": bad value: want debug, info, warn or error`},
		{[]string{"--version"}, 0, name + " " + version.Get().String() + "\n", ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			self, err := os.Executable()
			require.NoError(t, err)
			cmd := exec.Command(self, tc.args...)
			cmd.Env = append(os.Environ(), asMain+"=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err = cmd.Run()
			if tc.code == 0 {
				require.NoError(t, err, stderr.String())
				require.Equal(t, tc.stdout, stdout.String())
				require.Empty(t, stderr.String())
				return
			}
			var exit *exec.ExitError
			require.True(t, errors.As(err, &exit), "%v", err)
			require.Equal(t, tc.code, exit.ExitCode())
			require.Contains(t, stderr.String(), tc.stderr)
			require.Contains(t, stderr.String(), "Usage of "+name+":")
			require.Empty(t, stdout.String())
		})
	}
}

// CheckVersion calls run, the program's run, with --version: it prints
// the version on stdout, exits 0 and starts nothing.
func CheckVersion(t *testing.T, name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--version"}, &stdout, &stderr)
	require.NoError(t, err)
	require.Equal(t, 0, cmdline.ExitCode(name, err, &stderr))
	require.Equal(t, name+" "+version.Get().String()+"\n", stdout.String())
	require.Empty(t, stderr.String())
}
