package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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

// TestReview17b_SecondInterruptQuits: the first Ctrl-C lets submit -f
// wait for the answer of the batch in flight (up to 30s); a second one
// must kill conductorctl at once, as it did not while signal.NotifyContext
// kept catching the signal.
func TestReview17b_SecondInterruptQuits(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select { // an answer that does not come
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	file := filepath.Join(t.TempDir(), "jobs.jsonl")
	require.NoError(t, os.WriteFile(file, []byte("1\n2\n"), 0o600))

	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, "--server", srv.URL, "submit", "-f", file, "squares")
	cmd.Env = append(os.Environ(), "CONDUCTORCTL_TEST_MAIN=1", "CONDUCTOR_TOKEN=")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the batch did not arrive")
	}
	// The first interrupt is taken, the next ones (sent until it exits,
	// as we cannot see when conductorctl took the first) kill it.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		select {
		case err := <-exited:
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, errOut.String())
			ws := exit.Sys().(syscall.WaitStatus)
			require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGINT, "killed by the second SIGINT: %v; %s", err, errOut.String())
			return
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("conductorctl still runs 10s after repeated interrupts; stderr: %s", errOut.String())
		case <-tick.C:
		}
	}
}
