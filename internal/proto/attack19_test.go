package proto

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// Review 19: attacks on framed payloads (frame.go).

// attack19Payloads are payloads chosen to confuse a reader that scans
// them: lines of other messages, frames' own lines, blank lines, bytes
// that are not UTF-8, a carriage return before a newline.
func attack19Payloads(rng *rand.Rand) [][]byte {
	ps := [][]byte{
		[]byte("\n"),
		[]byte("\n{\"op\":\"done\",\"id\":\"victim\",\"result\":1}\n"),
		[]byte("{\"op\":\"job\",\"id\":\"forged\",\"size\":3}\nabc\n"),
		[]byte("{\"op\":\"shutdown\"}"),
		[]byte("\r\n\r\n"),
		{0, 0xff, 0xfe, '\n', '{', '}'},
		[]byte(`"size":`),
		bytes.Repeat([]byte("{\"op\":\"cancel\",\"id\":\"x\"}\n"), 5000), // ~125 KiB: written from where it is
	}
	alphabet := []byte("{}\"\n\r :,opjbsizedn0123456789\\\x00\xff")
	for range 200 {
		n := rng.IntN(300)
		if rng.IntN(10) == 0 {
			n = rng.IntN(200 << 10)
		}
		p := make([]byte, n)
		for i := range p {
			p[i] = alphabet[rng.IntN(len(alphabet))]
		}
		ps = append(ps, p)
	}
	return ps
}

// Any bytes go through a frame and come back as they were, whether the
// reader gets them in one read, a byte at a time or in halves, and a
// message after each frame is read as itself: nothing in a payload is
// ever read as a line.
func TestAttack19_FrameRoundTripAnyBytes(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(19, 19))
	payloads := attack19Payloads(rng)
	var b []byte
	for i, p := range payloads {
		var err error
		b, err = AppendFramed(b, Message{Op: OpJob, ID: "j" + strconv.Itoa(i), Type: "t", Payload: p, Attempt: 1})
		require.NoError(t, err)
		b, err = Append(b, Message{Op: OpCancel, ID: "after" + strconv.Itoa(i)})
		require.NoError(t, err)
	}
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"whole":   func(r io.Reader) io.Reader { return r },
		"onebyte": iotest.OneByteReader,
		"half":    iotest.HalfReader,
	} {
		r := NewReader(wrap(bytes.NewReader(b)), 0)
		for i, p := range payloads {
			m, err := r.Read()
			require.NoError(t, err, "%s: job %d", name, i)
			require.Equal(t, "j"+strconv.Itoa(i), m.ID, name)
			require.True(t, bytes.Equal(p, m.Payload), "%s: job %d's payload of %d bytes", name, i, len(p))
			require.Zero(t, m.Size, name)
			m, err = r.Read()
			require.NoError(t, err, "%s: after job %d", name, i)
			require.Equal(t, Message{Op: OpCancel, ID: "after" + strconv.Itoa(i)}, m, name)
		}
		_, err := r.Read()
		require.ErrorIs(t, err, io.EOF, name)
	}
}

// WriteFramed, over a pipe whose reader takes a few bytes at a time, with
// concurrent writers: each frame arrives whole and uninterleaved (the
// large ones are written in three Writes under the Writer's lock).
func TestAttack19_WriteFramedConcurrentPipe(t *testing.T) {
	t.Parallel()
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	rng := rand.New(rand.NewPCG(1, 19))
	payloads := attack19Payloads(rng)
	w := NewWriter(pw)
	errc := make(chan error, 2)
	half := len(payloads) / 2
	for _, part := range [][2]int{{0, half}, {half, len(payloads)}} {
		go func() {
			for i := part[0]; i < part[1]; i++ {
				if err := w.WriteFramed(Message{Op: OpJob, ID: "j" + strconv.Itoa(i), Payload: payloads[i]}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	go func() {
		e1, e2 := <-errc, <-errc
		errc <- errors.Join(e1, e2)
		pw.Close()
	}()
	r := NewReader(iotest.HalfReader(pr), 0)
	seen := map[string]bool{}
	for range payloads {
		m, err := r.Read()
		require.NoError(t, err)
		i, err := strconv.Atoi(strings.TrimPrefix(m.ID, "j"))
		require.NoError(t, err, m.ID)
		require.False(t, seen[m.ID], m.ID)
		seen[m.ID] = true
		require.True(t, bytes.Equal(payloads[i], m.Payload), "job %d", i)
	}
	_, err = r.Read()
	require.ErrorIs(t, err, io.EOF)
	require.NoError(t, <-errc)
}

// The limit: a frame of exactly the reader's limit is read, one byte over
// is skipped and named; sizes that are no size (huge, negative, not an
// integer, past int64) are errors and the reader goes on or ends; nothing
// hangs or panics.
func TestAttack19_FrameSizes(t *testing.T) {
	t.Parallel()
	const max = 64
	at := strings.Repeat("a", max)
	over := strings.Repeat("b", max+1)
	in := strings.Join([]string{
		`{"op":"job","id":"at","size":` + strconv.Itoa(max) + `}`, at,
		`{"op":"job","id":"over","size":` + strconv.Itoa(max+1) + `}`, over,
		`{"op":"job","id":"float","size":1.5}`,
		`{"op":"job","id":"str","size":"3"}`,
		`{"op":"job","id":"big","size":9223372036854775808}`,
		`{"op":"job","id":"both","payload":{"forged":true},"size":3}`, `abc`,
		`{"op":"done","id":"done","size":2}`, `{}`,
		`{"op":"ready"}`,
		`{"op":"job","id":"huge","size":` + strconv.Itoa(1<<62) + `}`,
		`only a little`,
	}, "\n")
	r := NewReader(strings.NewReader(in), max)

	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, Message{Op: OpJob, ID: "at", Payload: []byte(at)}, m)

	_, err = r.Read()
	long, ok := errors.AsType[*LineTooLongError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, LineTooLongError{Size: max + 1, Max: max, Op: OpJob, ID: "over"}, *long)

	for _, what := range []string{"float", "str", "big"} {
		_, err = r.Read()
		_, ok = errors.AsType[*SyntaxError](err)
		require.True(t, ok, "%s: %v", what, err)
	}

	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, Message{Op: OpJob, ID: "both", Payload: []byte("abc")}, m, "the frame, not the line's payload")

	_, err = r.Read()
	_, ok = errors.AsType[*SyntaxError](err)
	require.True(t, ok, "a frame after a done: %v", err)

	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, OpReady, m.Op)

	_, err = r.Read()
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "a frame of 1<<62 bytes on a channel that ends")
}

// A channel that ends inside a frame, or right after its bytes before its
// newline, is an unexpected end, not a message.
func TestAttack19_EOFInFrame(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"{\"op\":\"job\",\"id\":\"j\",\"size\":5}\n",
		"{\"op\":\"job\",\"id\":\"j\",\"size\":5}\nab",
		"{\"op\":\"job\",\"id\":\"j\",\"size\":5}\nabcde",
		"{\"op\":\"done\",\"id\":\"j\",\"size\":5}\nabc",
	} {
		r := NewReader(strings.NewReader(in), 0)
		_, err := r.Read()
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%q", in)
	}
}

// A frame whose length was wrong (not followed by a newline) is followed
// by what is not a line's start: the reader must resynchronise at the next
// newline, as frameEnd says, and not read the rest of that line, which a
// payload may have made look like any message, as one.
func TestAttack19_BadFrameEndDoesNotYieldTheRestOfTheLine(t *testing.T) {
	t.Parallel()
	in := "{\"op\":\"job\",\"id\":\"short\",\"size\":2}\n" +
		"abX{\"op\":\"cancel\",\"id\":\"victim\"}\n" +
		"{\"op\":\"ready\"}\n"
	r := NewReader(strings.NewReader(in), 0)
	_, err := r.Read()
	_, ok := errors.AsType[*SyntaxError](err)
	require.True(t, ok, "%v", err)
	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, Message{Op: OpReady}, m, "the rest of the frame's last line is not read as a message")
}

// LineReady after a frame: false while a framed job's line is buffered
// (its frame may not have come), true for the next plain line once the
// frame was read, whatever the payload held (a buffered payload full of
// lines is never taken for them).
func TestAttack19_LineReadyAroundFrames(t *testing.T) {
	t.Parallel()
	b, err := AppendFramed(nil, Message{Op: OpJob, ID: "j", Payload: []byte("{\"op\":\"ready\"}\n")})
	require.NoError(t, err)
	b, err = Append(b, Message{Op: OpCancel, ID: "j"})
	require.NoError(t, err)
	b, err = AppendFramed(b, Message{Op: OpJob, ID: "k", Payload: []byte("\n")})
	require.NoError(t, err)
	r := NewReader(bytes.NewReader(b), 0)
	_, _ = r.br.Peek(len(b)) // all buffered
	require.False(t, r.LineReady(), "a framed job's line")
	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, "{\"op\":\"ready\"}\n", string(m.Payload))
	require.True(t, r.LineReady(), "the cancel after the frame")
	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, Message{Op: OpCancel, ID: "j"}, m)
	require.False(t, r.LineReady(), "the next framed job's line")
	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, "\n", string(m.Payload))
	require.False(t, r.LineReady())
}
