package cmdline

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUsage_SaysTheErrorAndTheUsage(t *testing.T) {
	var out bytes.Buffer
	fs := flag.NewFlagSet("workerd", flag.ContinueOnError)
	fs.SetOutput(&out)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), "Usage of workerd: ...") }
	err := Usage(fs, errors.New(`unexpected argument "x"`))
	require.Equal(t, "workerd: unexpected argument \"x\"\nUsage of workerd: ...\n", out.String())
	var stderr bytes.Buffer
	require.Equal(t, 2, ExitCode("workerd", err, &stderr))
	require.Empty(t, stderr.String(), "said already")
}

func TestExitCode(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 0, ExitCode("conductord", nil, &stderr))
	require.Equal(t, 0, ExitCode("conductord", flag.ErrHelp, &stderr))
	require.Empty(t, stderr.String())
	require.Equal(t, 1, ExitCode("conductord", errors.New("no room"), &stderr))
	require.Equal(t, "conductord: no room\n", stderr.String())
	require.Equal(t, 2, ExitCode("conductord", fmt.Errorf("creds: %w", UsageError{errors.New("bad")}), &stderr))
}
