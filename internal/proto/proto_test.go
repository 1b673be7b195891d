package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReader_Read(t *testing.T) {
	t.Parallel()

	in := strings.Join([]string{
		`{"op":"ready"}`,
		``,
		`garbage`,
		`{"id":"no-op"}`,
		`{"op":"done","id":"a","result":4}`,
		`{"op":"done","id":"b","error":"boom"}`,
		strings.Repeat("x", 200),
		`{"op":"ready"}`,
	}, "\n")
	r := NewReader(strings.NewReader(in), 100)

	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, OpReady, m.Op)

	_, err = r.Read()
	var se *SyntaxError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "garbage", string(se.Line))

	_, err = r.Read()
	require.ErrorAs(t, err, &se)
	require.Contains(t, err.Error(), `no "op"`)

	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, Message{Op: OpDone, ID: "a", Result: []byte("4")}, m)

	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, "boom", m.Error)

	_, err = r.Read()
	require.ErrorIs(t, err, ErrLineTooLong)

	m, err = r.Read()
	require.NoError(t, err, "the reader resumes after a long line")
	require.Equal(t, OpReady, m.Op)

	_, err = r.Read()
	require.ErrorIs(t, err, io.EOF)
}

func TestReader_LongLineAcrossBuffers(t *testing.T) {
	t.Parallel()

	payload := strings.Repeat("7", 200<<10) // longer than the bufio buffer
	in := `{"op":"job","id":"x","payload":` + payload + "}\n" + `{"op":"ready"}` + "\n"

	m, err := NewReader(strings.NewReader(in), 0).Read()
	require.NoError(t, err)
	require.Len(t, m.Payload, len(payload))

	r := NewReader(strings.NewReader(in), 100<<10)
	_, err = r.Read()
	require.ErrorIs(t, err, ErrLineTooLong)
	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, OpReady, m.Op)
}

func TestWriter_Write(t *testing.T) {
	t.Parallel()

	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Write(Message{Op: OpJob, ID: "j1", Type: "squares", Payload: []byte("3"), Attempt: 1}))
	require.Equal(t, `{"op":"job","id":"j1","type":"squares","payload":3,"attempt":1}`+"\n", buf.String())

	err := w.Write(Message{Op: OpDone, Result: []byte("{not json")})
	require.ErrorIs(t, err, ErrEncode)
	require.False(t, errors.Is(err, io.EOF))
}

// FuzzDecode checks that Decode, fast path or not, decodes as encoding/json.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"op":"done","id":"a","result":{"x":[1,2]}}`))
	f.Add([]byte(`{"op":"ready"}`))
	f.Add([]byte(`{`))
	f.Add([]byte(jobLine))
	f.Add([]byte(doneLine))
	f.Add([]byte(" {\t\"op\" :\"job\" ,\n\"payload\"\r: [ 1 , \"]}\\\"\" ] , \"attempt\":-0 } "))
	f.Add([]byte(`{"op":"ready","prefetch":4,"permanent":false,"data":null}`))
	f.Add([]byte(`{"op":"job","attempt":1e2,"ID":"x","id":"y","id":"z"}`))
	f.Add([]byte(`{"op":"job","attempt":9223372036854775808}`))
	f.Add([]byte("{\"op\":\"done\",\"error\":\"\xff\\u00e9\",\"type\":\"é\"}"))
	f.Fuzz(func(t *testing.T, line []byte) {
		checkDecode(t, line)
		m, err := Decode(line)
		if err != nil {
			var se *SyntaxError
			require.ErrorAs(t, err, &se)
			return
		}
		require.NotEmpty(t, m.Op)
	})
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("{\"op\":\"ready\"}\n\n{\"op\":\"done\"}"), 40)
	f.Add([]byte(`{"op":"done","id":"j1","result":[1,2,{"a":"b"}]}`+"\n"+`{"op":"ready"}`), 20)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		r := NewReader(bytes.NewReader(in), max)
		for range len(in) + 2 {
			_, err := r.Read()
			if errors.Is(err, io.EOF) {
				return
			}
			var long *LineTooLongError
			if errors.As(err, &long) {
				require.Greater(t, long.Size, max)
			}
		}
		t.Fatal("reader did not reach EOF")
	})
}

func TestReader_LineReady(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewReader(pr, 0)
	go func() {
		_, _ = pw.Write([]byte(`{"op":"ready"}` + "\n" + `{"op":"busy"}` + "\n\n \t\n" + `{"op":"sh`))
	}()
	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, OpReady, m.Op)
	require.True(t, r.LineReady(), "the second line is buffered")
	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, OpBusy, m.Op)
	require.False(t, r.LineReady(), "only blank lines and part of a line are buffered")
	go func() {
		_, _ = pw.Write([]byte(`utdown"}` + "\n"))
		pw.Close()
	}()
	m, err = r.Read()
	require.NoError(t, err)
	require.Equal(t, OpShutdown, m.Op)
	require.False(t, r.LineReady())
}
