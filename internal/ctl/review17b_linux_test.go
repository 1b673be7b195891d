package ctl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: its controlling side and its terminal.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { ptmx.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { tty.Close() })
	return ptmx, tty
}

// TestReview17b_SubmitFileStdinTerminal: `conductorctl submit -f -
// squares` with nothing piped in waited, silent, for the terminal's
// end of file: it looked hung. It now says that it reads the jobs from
// the terminal, and how to end them.
func TestReview17b_SubmitFileStdinTerminal(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	ptmx, tty := openPTY(t)
	errOut := make(chanWriter, 10)
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		_, err := execute(context.Background(), []string{"--server", b.srv.URL, "--token", "tok", "submit", "-f", "-", "squares"}, tty, &out, errOut)
		done <- err
	}()
	require.Contains(t, errOut.next(t), "reading the jobs from the terminal, one JSON value a line; end them with Ctrl-D")
	_, err := ptmx.WriteString("1\n2\n\x04")
	require.NoError(t, err)
	require.NoError(t, <-done)
	require.Len(t, strings.Fields(out.String()), 1, "one batch")
	require.Equal(t, 2, b.queued(t, "squares"))
}
