package proto

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A framed payload reaches the reader as it was written, whatever it
// holds: not JSON, newlines, or the text of another message, which must
// never be read as one.
func TestFramed_RoundTrip(t *testing.T) {
	t.Parallel()
	payloads := []string{
		`7`,
		`{"a":[1,2,{"b":"c"}]}`,
		"not json at all",
		"{\"op\":\"cancel\",\"id\":\"j2\"}\n{\"op\":\"shutdown\"}\n",
		"\n\n",
		strings.Repeat("x", 3*64<<10), // past the reader's buffer
	}
	var b []byte
	for i, p := range payloads {
		var err error
		b, err = AppendFramed(b, Message{Op: OpJob, ID: "j" + string(rune('a'+i)), Type: "t", Payload: []byte(p), Attempt: 1})
		require.NoError(t, err)
	}
	b, err := AppendFramed(b, Message{Op: OpShutdown})
	require.NoError(t, err)
	r := NewReader(bytes.NewReader(b), 0)
	for i, p := range payloads {
		m, err := r.Read()
		require.NoError(t, err, "job %d", i)
		require.Equal(t, Message{Op: OpJob, ID: "j" + string(rune('a'+i)), Type: "t", Payload: []byte(p), Attempt: 1}, m)
	}
	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, OpShutdown, m.Op)
	_, err = r.Read()
	require.ErrorIs(t, err, io.EOF)
}

// The line of a framed job names its size, not its payload, and an empty
// payload is not framed.
func TestAppendFramed_Line(t *testing.T) {
	t.Parallel()
	b, err := AppendFramed(nil, Message{Op: OpJob, ID: "j1", Type: "t", Payload: []byte(`"hi"`), Attempt: 2})
	require.NoError(t, err)
	require.Equal(t, "{\"op\":\"job\",\"id\":\"j1\",\"type\":\"t\",\"attempt\":2,\"size\":4}\n\"hi\"\n", string(b))
	b, err = AppendFramed(nil, Message{Op: OpJob, ID: "j1", Type: "t", Attempt: 2})
	require.NoError(t, err)
	require.Equal(t, "{\"op\":\"job\",\"id\":\"j1\",\"type\":\"t\",\"attempt\":2}\n", string(b))
	b, err = AppendFramed(nil, Message{Op: OpDone, ID: "j1", Result: []byte(`1`)})
	require.NoError(t, err)
	require.Equal(t, "{\"op\":\"done\",\"id\":\"j1\",\"result\":1}\n", string(b), "only a job's payload is framed")
}

// WriteFramed writes a large payload from where it is, over a real pipe,
// and the reader takes it whole.
func TestWriteFramed_Pipe(t *testing.T) {
	t.Parallel()
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	payload := bytes.Repeat([]byte(`"abcdefgh"`), 100_000) // not one JSON value: unchecked
	w := NewWriter(pw)
	errc := make(chan error, 1)
	go func() {
		defer pw.Close()
		if err := w.WriteFramed(Message{Op: OpJob, ID: "big", Payload: payload}); err != nil {
			errc <- err
			return
		}
		errc <- w.Write(Message{Op: OpCancel, ID: "big"})
	}()
	r := NewReader(pr, 2<<20)
	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, "big", m.ID)
	require.True(t, bytes.Equal(payload, m.Payload), "the payload arrives whole")
	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, Message{Op: OpCancel, ID: "big"}, m)
	require.NoError(t, <-errc)
}

// A frame over the limit is read past, and its error names the job; a
// frame after another op, or of a bad size, is an error too; the reader
// goes on with the next line each time.
func TestReader_BadFrames(t *testing.T) {
	t.Parallel()
	in := strings.Join([]string{
		`{"op":"job","id":"big","size":50}`,
		strings.Repeat("y", 50),
		`{"op":"ready","size":3}`,
		`abc`,
		`{"op":"job","id":"neg","size":-5}`,
		`{"op":"job","id":"short","size":2}`,
		`abc`, // one byte more than said: no newline where the frame ends
		`{"op":"job","id":"ok","size":2}`,
		`{}`,
		`{"op":"job","id":"cut","size":10}`,
		`abc`,
	}, "\n")
	r := NewReader(strings.NewReader(in), 40)

	_, err := r.Read()
	long, ok := errors.AsType[*LineTooLongError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, LineTooLongError{Size: 50, Max: 40, Op: OpJob, ID: "big"}, *long)

	_, err = r.Read()
	_, ok = errors.AsType[*SyntaxError](err)
	require.True(t, ok, "a frame after a ready: %v", err)

	_, err = r.Read()
	_, ok = errors.AsType[*SyntaxError](err)
	require.True(t, ok, "a negative size: %v", err)

	_, err = r.Read()
	_, ok = errors.AsType[*SyntaxError](err)
	require.True(t, ok, "a frame not ended by a newline: %v", err)

	m, err := r.Read()
	require.NoError(t, err, "the reader resynchronises at the next line")
	require.Equal(t, Message{Op: OpJob, ID: "ok", Payload: []byte("{}")}, m)

	_, err = r.Read()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "a channel that ends inside a frame")
}

// LineReady does not promise a frame's line: its frame may not have come.
func TestReader_LineReadyFrame(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	r := NewReader(pr, 0)
	go func() {
		_, _ = pw.Write([]byte("{\"op\":\"ready\"}\n{\"op\":\"job\",\"id\":\"j\",\"size\":3}\n"))
	}()
	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, OpReady, m.Op)
	require.False(t, r.LineReady(), "the job's frame is not buffered")
	go func() { _, _ = pw.Write([]byte("abc\n")) }()
	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, "abc", string(m.Payload))
	require.NoError(t, pw.Close())
}
