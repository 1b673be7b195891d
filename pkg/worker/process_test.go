package worker_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// child is the test binary run as a worker process, as workerd runs one.
type child struct {
	cmd    *exec.Cmd
	in     *os.File           // workerd's end of fd 3; nil without the channel
	msgs   chan proto.Message // read from fd 4
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr bytes.Buffer // read after exited is closed

	exited chan struct{} // closed once Wait returns
	err    error         // Wait's error; read after exited is closed
}

// startChild starts the "squares" fake worker, with fds 3 and 4 when
// channel is set.
func startChild(t testing.TB, channel bool) *child {
	return startFake(t, "squares", channel)
}

// startFake starts the fake worker named mode, with fds 3 and 4 when
// channel is set.
func startFake(t testing.TB, mode string, channel bool) *child {
	t.Helper()
	c := &child{msgs: make(chan proto.Message, 64), exited: make(chan struct{})}
	c.cmd = exec.CommandContext(t.Context(), os.Args[0]) // killed if the test ends first
	c.cmd.Env = append(os.Environ(), modeEnv+"="+mode, "CONDUCTOR_PROTOCOL=channel")
	c.cmd.Stderr = &c.stderr
	var err error
	c.stdin, err = c.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := c.cmd.StdoutPipe()
	require.NoError(t, err)
	c.stdout = bufio.NewReader(stdout)

	var inR, outR, outW *os.File
	if channel {
		inR, c.in, err = os.Pipe()
		require.NoError(t, err)
		outR, outW, err = os.Pipe()
		require.NoError(t, err)
		c.cmd.ExtraFiles = []*os.File{inR, outW} // fds 3 and 4
	}
	require.NoError(t, c.cmd.Start())
	if channel {
		inR.Close()
		outW.Close()
		go readMessages(outR, c.msgs)
	} else {
		close(c.msgs)
	}
	go func() {
		defer close(c.exited)
		c.err = c.cmd.Wait()
	}()
	t.Cleanup(func() {
		<-c.exited
		for range c.msgs {
		}
		if channel {
			c.in.Close()
			outR.Close()
		}
		if t.Failed() {
			t.Logf("worker stderr:\n%s", c.stderr.String())
		}
	})
	return c
}

// wait returns the process's exit error once it has exited, and checks that
// it sent nothing more.
func (c *child) wait(t testing.TB) error {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(timeout):
		t.Fatalf("worker process did not exit within %v", timeout)
	}
	m, ok := <-c.msgs
	require.False(t, ok, "unexpected message: %+v", m)
	return c.err
}

// startWaitJob sends a job that blocks in its handler until a line arrives on
// the process's stdin, and returns once the handler runs.
func (c *child) startWaitJob(t *testing.T) {
	t.Helper()
	require.Equal(t, proto.Message{Op: proto.OpReady, Prefetch: worker.DefaultPrefetch, Cache: worker.DefaultLookupCache, Framed: true}, recvFrom(t, c.msgs))
	_, err := io.WriteString(c.in, `{"op":"job","id":"j1","type":"wait","payload":7,"attempt":1}`+"\n")
	require.NoError(t, err)
	line, err := c.stdout.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "started j1\n", line)
}

func TestMain_SignalFinishesJob(t *testing.T) {
	t.Parallel()
	c := startChild(t, true)
	c.startWaitJob(t)

	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, proto.Message{Op: proto.OpBusy}, recvFrom(t, c.msgs))
	_, err := io.WriteString(c.stdin, "go\n")
	require.NoError(t, err)

	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: []byte(`49`)}, recvFrom(t, c.msgs))
	require.NoError(t, c.wait(t))
}

func TestMain_SecondSignalCancelsJob(t *testing.T) {
	t.Parallel()
	c := startChild(t, true)
	c.startWaitJob(t)

	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, proto.Message{Op: proto.OpBusy}, recvFrom(t, c.msgs))
	require.NoError(t, c.cmd.Process.Signal(os.Interrupt))

	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Error: "worker: hard stop"}, recvFrom(t, c.msgs))
	require.NoError(t, c.wait(t))
}

func TestMain_ChannelClosedExits1(t *testing.T) {
	t.Parallel()
	c := startChild(t, true)
	c.startWaitJob(t)

	require.NoError(t, c.in.Close())

	requireExitCode(t, 1, c.wait(t))
	require.Equal(t, "worker: channel closed by workerd\n", c.stderr.String())
}

func TestMain_NotStartedByWorkerd(t *testing.T) {
	t.Parallel()
	c := startChild(t, false)

	requireExitCode(t, 1, c.wait(t))
	// fd 3 is either not open or, on Go 1.25 and later, a cgroup file the
	// runtime opened: both are refused.
	require.Regexp(t, `^worker: fd 3 is not (open|a pipe): this program must be started by workerd \(see docs/protocol.md\)\n$`,
		c.stderr.String())
}

func requireExitCode(t *testing.T, code int, err error) {
	t.Helper()
	exitErr, ok := err.(*exec.ExitError)
	require.True(t, ok, "want exit code %d, got %v", code, err)
	require.Equal(t, code, exitErr.ExitCode())
}
