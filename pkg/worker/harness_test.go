package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// timeout bounds every wait of a test for the worker; reaching it is a failure.
const timeout = 10 * time.Second

// testBundle is a Run over os.Pipe, with the test playing workerd.
type testBundle struct {
	in       *os.File           // workerd's end of the worker's input
	msgs     chan proto.Message // the worker's messages; closed at the end of its output
	stop     context.CancelFunc // cancels Run's ctx: a graceful stop
	hardStop context.CancelFunc // cancels the WithHardStop ctx
	logs     *syncBuffer        // Run's log

	stopped chan struct{} // closed when Run returns
	err     error         // Run's error; read after stopped is closed
}

// setup starts Run with h and opts and reads the worker's first message,
// which must be ready (with the default prefetch unless opts set one).
// Cleanup closes the channel and waits for every goroutine.
func setup(t *testing.T, h worker.Handler, opts ...worker.Option) *testBundle {
	t.Helper()
	inR, inW, err := os.Pipe()
	require.NoError(t, err)
	outR, outW, err := os.Pipe()
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	hard, hardStop := context.WithCancel(context.Background())
	b := &testBundle{
		in:       inW,
		msgs:     make(chan proto.Message, 64),
		stop:     stop,
		hardStop: hardStop,
		logs:     &syncBuffer{},
		stopped:  make(chan struct{}),
	}
	logger := slog.New(slog.NewTextHandler(b.logs, nil))
	go readMessages(outR, b.msgs)
	go func() {
		defer close(b.stopped)
		b.err = worker.Run(ctx, h, append([]worker.Option{worker.WithChannel(inR, outW), worker.WithHardStop(hard), worker.WithLogger(logger)}, opts...)...)
	}()
	t.Cleanup(func() {
		inW.Close()
		<-b.stopped // Run closed inR and outW
		for range b.msgs {
		}
		outR.Close()
		stop()
		hardStop()
		if t.Failed() {
			t.Logf("worker log:\n%s", b.logs)
		}
	})
	ready := b.recv(t)
	require.Equal(t, proto.OpReady, ready.Op)
	if len(opts) == 0 {
		require.Equal(t, worker.DefaultPrefetch, ready.Prefetch)
	}
	return b
}

// readMessages sends the messages read from r to msgs until r ends.
func readMessages(r io.Reader, msgs chan<- proto.Message) {
	defer close(msgs)
	pr := proto.NewReader(r, 0)
	for {
		m, err := pr.Read()
		if err != nil {
			return
		}
		msgs <- m
	}
}

// send writes line and a newline to the worker's input.
func (b *testBundle) send(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(b.in, line+"\n")
	require.NoError(t, err)
}

// sendJob sends a job op.
func (b *testBundle) sendJob(t *testing.T, id, typ, payload string) {
	t.Helper()
	b.send(t, fmt.Sprintf(`{"op":"job","id":%q,"type":%q,"payload":%s,"attempt":1}`, id, typ, payload))
}

// recv returns the worker's next message.
func (b *testBundle) recv(t *testing.T) proto.Message {
	t.Helper()
	return recvFrom(t, b.msgs)
}

// wait returns Run's error once it returns, and checks that the worker sent
// nothing more.
func (b *testBundle) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-b.stopped:
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %v", timeout)
	}
	m, ok := <-b.msgs
	require.False(t, ok, "unexpected message after Run returned: %+v", m)
	return b.err
}

func recvFrom(t *testing.T, msgs <-chan proto.Message) proto.Message {
	t.Helper()
	select {
	case m, ok := <-msgs:
		require.True(t, ok, "the worker closed its output")
		return m
	case <-time.After(timeout):
		t.Fatalf("no message from the worker within %v", timeout)
		return proto.Message{}
	}
}

// blocker is a handler that runs until the test releases it or its context
// is cancelled.
type blocker struct {
	started chan *worker.Job // receives each job as its handler starts
	release chan struct{}    // closed to let the handlers return "released"
	cause   chan error       // receives context.Cause when the handler is cancelled
}

func newBlocker() *blocker {
	return &blocker{
		started: make(chan *worker.Job, 1),
		release: make(chan struct{}),
		cause:   make(chan error, 1),
	}
}

func (b *blocker) handle(ctx context.Context, job *worker.Job) (any, error) {
	b.started <- job
	select {
	case <-b.release:
		return "released", nil
	case <-ctx.Done():
		select {
		case b.cause <- context.Cause(ctx):
		default:
		}
		return nil, context.Cause(ctx)
	}
}

// waitStarted returns the job once its handler runs.
func (b *blocker) waitStarted(t *testing.T) *worker.Job {
	t.Helper()
	select {
	case job := <-b.started:
		return job
	case <-time.After(timeout):
		t.Fatalf("handler not started within %v", timeout)
		return nil
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// discardLogger drops Run's log where a test does not look at it.
var discardLogger = slog.New(slog.DiscardHandler)
