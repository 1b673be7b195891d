package proto

import (
	"bytes"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReader_LongLineHead(t *testing.T) {
	t.Parallel()

	big := `"` + strings.Repeat("x", 300<<10) + `"`
	tests := []struct {
		name   string
		line   string
		op     Op
		id     string
		req    uint64
		prefix bool // the line ends at its head: no newline after it
	}{
		{name: "Reply", line: `{"op":"reply","req":42,"keys":[` + big + `]}`, op: OpReply, req: 42},
		{name: "ReqCutAtHead", line: `{"op":"reply","x":"` + strings.Repeat("y", LongLineHead-28) + `","req":123456789,"keys":[` + big + `]}`, op: OpReply},
		{name: "ReqNotANumber", line: `{"op":"reply","req":"42","keys":[` + big + `]}`, op: OpReply},
		{name: "IDFirst", line: `{"op":"done","id":"j1","result":` + big + `}`, op: OpDone, id: "j1"},
		{name: "AnyOrder", line: ` { "result" : [1,{"a":"}"}] , "id":"j-2", "error":null, "op":"done","data":` + big + `}`, op: OpDone, id: "j-2"},
		{name: "IDAfterResult", line: `{"op":"done","result":` + big + `,"id":"j1"}`, op: OpDone},
		{name: "IDBeyondHead", line: `{"op":"done","x":"` + strings.Repeat("y", LongLineHead) + `","id":"j1","result":` + big + `}`, op: OpDone},
		{name: "IDCutAtHead", line: `{"op":"done","x":"` + strings.Repeat("y", LongLineHead-30) + `","id":"` + strings.Repeat("i", 40) + `","result":` + big + `}`, op: OpDone},
		{name: "CaseFolded", line: `{"OP":"done","Id":"j3","result":` + big + `}`, op: OpDone, id: "j3"},
		{name: "NotAString", line: `{"op":"done","id":7,"result":` + big + `}`, op: OpDone},
		{name: "Garbage", line: `garbage` + big},
		{name: "NotAnObject", line: `["op","done","id","j1",` + big + `]`},
		{name: "AtEOF", line: `{"op":"message","data":` + big + `}`, op: OpMessage, prefix: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := tt.line
			if !tt.prefix {
				in += "\n" + `{"op":"ready"}` + "\n"
			}
			r := NewReader(strings.NewReader(in), 100<<10)
			_, err := r.Read()
			require.ErrorIs(t, err, ErrLineTooLong)
			var e *LineTooLongError
			require.ErrorAs(t, err, &e)
			require.Equal(t, LineTooLongError{Size: len(tt.line), Max: 100 << 10, Op: tt.op, ID: tt.id, Req: tt.req}, *e)
			require.Equal(t, "proto: line too long: "+strconv.Itoa(len(tt.line))+" bytes, over the limit of 102400 bytes", e.Error())
			if tt.prefix {
				_, err = r.Read()
				require.ErrorIs(t, err, io.EOF)
				return
			}
			m, err := r.Read()
			require.NoError(t, err, "the reader resumes after a long line")
			require.Equal(t, OpReady, m.Op)
		})
	}
}

// longLine is a line of n bytes, made as it is read, never held whole:
// `{"op":"done","id":"j1","result":"xxx…"}` and its newline.
type longLine struct {
	head, tail []byte
	n          int // bytes of x left
}

func newLongLine(n int) *longLine {
	head, tail := []byte(`{"op":"done","id":"j1","result":"`), []byte(`"}`+"\n")
	return &longLine{head: head, tail: tail, n: n - len(head) - len(tail) + 1}
}

func (l *longLine) Read(p []byte) (int, error) {
	switch {
	case len(l.head) > 0:
		n := copy(p, l.head)
		l.head = l.head[n:]
		return n, nil
	case l.n > 0:
		n := min(len(p), l.n)
		copy(p[:n], xs)
		l.n -= n
		return n, nil
	case len(l.tail) > 0:
		n := copy(p, l.tail)
		l.tail = l.tail[n:]
		return n, nil
	}
	return 0, io.EOF
}

var xs = bytes.Repeat([]byte("x"), 64<<10)

// The reader holds no more than its limit of a long line, however long:
// skipping a line of 64 MiB allocates a small part of that. Not parallel:
// it measures the allocations of the whole program.
func TestReader_LongLineMemory(t *testing.T) {
	const size = 64 << 20
	in := io.MultiReader(newLongLine(size), strings.NewReader(`{"op":"ready"}`+"\n"))
	r := NewReader(in, DefaultMaxLine)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := r.Read()
	runtime.ReadMemStats(&after)

	var e *LineTooLongError
	require.ErrorAs(t, err, &e)
	require.Equal(t, LineTooLongError{Size: size, Max: DefaultMaxLine, Op: OpDone, ID: "j1"}, *e)
	// Up to its limit, the line is gathered as it would be if it fit.
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8*DefaultMaxLine), "bytes allocated to skip a line of %d", size)
	m, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, OpReady, m.Op)
}

// The limit is of a line's bytes, its newline not counted.
func TestReader_LineAtLimit(t *testing.T) {
	t.Parallel()

	line := `{"op":"done","id":"j1","error":"` + strings.Repeat("e", 70<<10) + `"}`
	m, err := NewReader(strings.NewReader(line+"\n"), len(line)).Read()
	require.NoError(t, err)
	require.Equal(t, "j1", m.ID)

	_, err = NewReader(strings.NewReader(line+"\n"), len(line)-1).Read()
	require.Equal(t, &LineTooLongError{Size: len(line), Max: len(line) - 1, Op: OpDone, ID: "j1"}, err)
}
