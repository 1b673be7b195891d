package conductor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// eventsCut is what the onEventsCut test signal reported.
type eventsCut struct {
	reason   string
	buffered int
}

// setupEvents starts a conductor serving its HTTP API whose event streams
// report their cuts on the returned channel.
func setupEvents(t *testing.T, cfg conductor.Config) (string, *nats.Conn, <-chan eventsCut) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.NATSListen = "127.0.0.1:0"
	cfg.HTTPListen = "127.0.0.1:0"
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	cuts := make(chan eventsCut, 10)
	conductor.OnEventsCut(c, func(reason string, buffered int) { cuts <- eventsCut{reason, buffered} })
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return "http://" + c.HTTPAddr(), nc, cuts
}

// openStalledStream opens GET path (/v1/events, a log stream) on a
// connection whose receive buffer is small, reads the answer's head, and
// then reads nothing more.
func openStalledStream(t *testing.T, url, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(url, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return conn
}

// requireDisconnected reads what conn's socket still holds and checks that
// the server closed the connection after it.
func requireDisconnected(t *testing.T, conn net.Conn) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second))) // a failsafe: the end comes at once
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closed the connection: %v", err)
}

// readEvents reads stream in a goroutine of its own and sends the index of
// each event on the channel it returns.
func readEvents(t *testing.T, stream *bufio.Reader) <-chan int {
	t.Helper()
	return readIndexes(stream, func(line string) (int, bool) {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			return 0, false
		}
		var e client.Event
		if json.Unmarshal([]byte(data), &e) != nil {
			return 0, false
		}
		return e.Index, true
	})
}

// readIndexes reads stream in a goroutine of its own and sends the index
// that index finds in each of its lines (an event, a log line) on the
// channel it returns, until the stream ends.
func readIndexes(stream *bufio.Reader, index func(line string) (int, bool)) <-chan int {
	got := make(chan int, 1)
	go func() {
		defer close(got)
		for {
			line, err := stream.ReadString('\n')
			if err != nil {
				return
			}
			if i, ok := index(line); ok {
				got <- i
			}
		}
	}()
	return got
}

// floodEvents publishes worker message i of 16 KiB.
func floodEvents(t *testing.T, nc *nats.Conn) func(i int) {
	data, err := json.Marshal(strings.Repeat("x", 16<<10))
	require.NoError(t, err)
	return func(i int) {
		publishEvent(t, nc, client.ScopeWorker, wire.Event{
			Time: eventTime, Kind: wire.EventWorkerMessage, Host: "a", Pool: "squares", Index: i, PID: 42, Data: data,
		})
	}
}

// floodUntilCut publishes items of 16 KiB (publish(i): an event, a log
// line, of index i), each once the reading stream got the one before (so
// that the reader is never behind), until a stream is cut, and returns
// the cut.
func floodUntilCut(t *testing.T, publish func(i int), read <-chan int, cuts <-chan eventsCut) eventsCut {
	t.Helper()
	for i := 1; i <= 5000; i++ { // about 200 fill the sockets of the stalled stream
		publish(i)
		select {
		case n, ok := <-read:
			require.True(t, ok, "the reading stream ended")
			require.Equal(t, i, n)
		case <-time.After(30 * time.Second):
			t.Fatalf("the reading stream did not get item %d", i)
		}
		select {
		case cut := <-cuts:
			t.Logf("cut after %d items of 16 KiB: %+v", i, cut)
			return cut
		default:
		}
	}
	t.Fatal("the stalled stream was never cut off")
	return eventsCut{}
}

// requireStillServed checks that the reading stream gets the next event.
func requireStillServed(t *testing.T, nc *nats.Conn, read <-chan int) {
	t.Helper()
	publishEvent(t, nc, client.ScopeWorker, wire.Event{Time: eventTime, Kind: wire.EventWorkerExit, Host: "a", Pool: "squares", Index: -1})
	for n := range read {
		if n == -1 {
			return
		}
	}
	t.Fatal("the reading stream ended")
}

// A client that stops reading its event stream while events keep coming
// is cut off once the events waiting for it would pass the buffer's bound
// (Config.EventBuffer), not buffered for, and disconnected; a client that
// reads keeps getting every event.
func TestConductor_EventStreamCutsSlowReaderAtBuffer(t *testing.T) {
	t.Parallel()
	const buffer = 64 << 10
	url, nc, cuts := setupEvents(t, conductor.Config{EventBuffer: buffer, EventWriteTimeout: time.Hour})
	_, good := openStream(t, url, "")
	read := readEvents(t, good)
	stalled := openStalledStream(t, url, "/v1/events")

	cut := floodUntilCut(t, floodEvents(t, nc), read, cuts)
	require.Equal(t, "overflow", cut.reason)
	require.LessOrEqual(t, cut.buffered, buffer, "never more queued than the bound")
	require.Greater(t, cut.buffered, buffer-(17<<10), "cut when the next event did not fit")
	requireStillServed(t, nc, read)
	requireDisconnected(t, stalled)
}

// A client whose socket takes nothing for Config.EventWriteTimeout is cut
// off and disconnected, however large the buffer.
func TestConductor_EventStreamCutsSlowReaderAtWriteDeadline(t *testing.T) {
	t.Parallel()
	const buffer = 1 << 30
	url, nc, cuts := setupEvents(t, conductor.Config{EventBuffer: buffer, EventWriteTimeout: 200 * time.Millisecond})
	_, good := openStream(t, url, "")
	read := readEvents(t, good)
	stalled := openStalledStream(t, url, "/v1/events")

	cut := floodUntilCut(t, floodEvents(t, nc), read, cuts)
	require.Equal(t, "write timeout", cut.reason)
	require.LessOrEqual(t, cut.buffered, buffer)
	requireStillServed(t, nc, read)
	requireDisconnected(t, stalled)
}
