// Package proto is the worker channel protocol: the JSON lines that workerd
// and a worker process exchange over file descriptors 3 (to the worker) and 4
// (from the worker). docs/protocol.md is its specification; this package is
// the one implementation of its framing, used by both ends.
package proto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// File descriptor numbers of the channel, as seen by the worker process.
const (
	FDToWorker   = 3
	FDFromWorker = 4
)

// Op names a message. Unknown ops are reported, never fatal.
type Op string

// Ops sent by workerd to the worker.
const (
	OpJob      Op = "job"      // run a job: ID, Type, Payload, Attempt, Redelivered
	OpShutdown Op = "shutdown" // finish the current job, then exit
	OpCancel   Op = "cancel"   // stop working on job ID
	// OpReply answers the worker's request Req: Value and Rev, Keys, or
	// Error with Code; Keep lets the worker keep a get's answer until a
	// drop names its key.
	OpReply Op = "reply"
	// OpDrop tells the worker that the lookup value it keeps of Name and
	// Key is stale; with no Name, every value it keeps.
	OpDrop Op = "drop"
)

// Ops sent by the worker to workerd.
const (
	OpReady Op = "ready" // the worker can take a job (sent once at start)
	OpDone  Op = "done"  // job ID ended with Result, or with Error
	OpBusy  Op = "busy"  // the worker will not take jobs until its next ready
	// OpMessage carries Data, any JSON, to whoever watches the pool's
	// events: workerd announces it as a worker "message" event.
	OpMessage Op = "message"
	// OpLookup asks for lookup Name: Do is "get" (Key), "set" (Key,
	// Value), "del" (Key) or "keys"; workerd answers with a reply of the
	// same Req.
	OpLookup Op = "lookup"
	// OpRequest asks the conductor side Command, with Data; workerd
	// answers with a reply of the same Req: Data, or Error with Code.
	OpRequest Op = "request"
	// OpCount adds Counters to the worker's counters (docs/stats.md).
	OpCount Op = "count"
)

// The lookup actions, in a lookup op's Do.
const (
	LookupGet  = "get"
	LookupSet  = "set"
	LookupDel  = "del"
	LookupKeys = "keys"
)

// Message is one line of the channel. Fields not used by an op are omitted.
type Message struct {
	Op      Op              `json:"op"`
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	// Redelivered, in a job op, is set when an earlier attempt at the job
	// may have run, all or in part.
	Redelivered bool            `json:"redelivered,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	// Permanent, with Error, asks that the job not be retried.
	Permanent bool `json:"permanent,omitempty"`
	// Data is the content of a message op.
	Data json.RawMessage `json:"data,omitempty"`
	// Prefetch, in a ready op, is how many jobs the worker takes queued
	// behind the one it runs; 0: one job at a time.
	Prefetch int `json:"prefetch,omitempty"`
	// Req numbers a request of the worker's (a lookup op) and names the
	// reply to it; the worker chooses it.
	Req uint64 `json:"req,omitempty"`
	// Do, Name, Key and Value are a lookup op's action and its operands.
	Do    string          `json:"do,omitempty"`
	Name  string          `json:"name,omitempty"`
	Key   string          `json:"key,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
	// Rev, in a reply, is the revision of the value read or written.
	Rev uint64 `json:"rev,omitempty"`
	// Keys, in a reply to a keys lookup, are the lookup's keys, sorted.
	Keys []string `json:"keys,omitempty"`
	// Code, in a reply with an Error, classes it as HTTP does: 400 a
	// request refused, 404 no such key, 413 too large, 429 too many
	// requests, 503 the store cannot answer now.
	Code int `json:"code,omitempty"`
	// Cache, in a ready op, is how many lookup answers the worker keeps
	// (answers marked Keep), 0 for none.
	Cache int `json:"cache,omitempty"`
	// Keep, in a reply to a get, lets the worker keep the answer until a
	// drop op names its key (or none).
	Keep bool `json:"keep,omitempty"`
	// Command, in a request op, names what the worker asks.
	Command string `json:"command,omitempty"`
	// Counters, in a count op, are increments of the worker's counters,
	// by name.
	Counters map[string]float64 `json:"counters,omitempty"`
	// Messages, in a ready op, says the worker takes message ops from
	// the conductor side (it reads its channel while it runs a job).
	Messages bool `json:"messages,omitempty"`
	// Framed, in a ready op, says the worker takes its jobs' payloads
	// framed (see Size).
	Framed bool `json:"framed,omitempty"`
	// Size, in a job op, says the payload is framed: its Size bytes follow
	// the line, then a newline, and the line has no payload field. The
	// bytes are the payload as submitted, unchecked and unscanned: Reader
	// reads them into Payload without looking at them.
	Size int `json:"size,omitempty"`
}

// DefaultMaxLine bounds one line of the channel: a payload or result of up to
// a mebibyte plus its envelope.
const DefaultMaxLine = 1<<20 + 64<<10

// DefaultMaxFrame bounds a framed payload: the largest a conductor takes
// (a payload over its inline limit comes by reference, and workerd
// frames what it read).
const DefaultMaxFrame = 256 << 20

// ErrLineTooLong is matched by the *LineTooLongError that Reader.Read
// returns for a line over its limit. The line is skipped; the next Read
// starts on the line after it.
var ErrLineTooLong = errors.New("proto: line too long")

// SyntaxError reports a line that is not a valid message. The line is skipped.
type SyntaxError struct {
	Line []byte // the start of the offending line, at most 120 bytes
	Err  error
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("proto: bad message %q: %v", e.Line, e.Err)
}

func (e *SyntaxError) Unwrap() error { return e.Err }

// Reader decodes messages, one per line. It is not safe for concurrent use.
type Reader struct {
	br       *bufio.Reader
	max      int
	maxFrame int // bounds a frame
}

// NewReader returns a Reader of r that rejects lines and frames over max
// bytes; if max <= 0, lines over DefaultMaxLine and frames over
// DefaultMaxFrame.
func NewReader(r io.Reader, max int) *Reader {
	frame := DefaultMaxFrame
	if max > 0 {
		frame = max
	} else {
		max = DefaultMaxLine
	}
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), max: max, maxFrame: frame}
}

// SetMaxFrame bounds the frames r reads to n bytes: a larger one is read
// past and reported as a *LineTooLongError.
func (r *Reader) SetMaxFrame(n int) { r.maxFrame = n }

// Read returns the next message. Blank lines are skipped. A line that is too
// long, not JSON, or has no op returns an error (*LineTooLongError or
// *SyntaxError) and the reader stays usable; io.EOF means the peer closed the
// channel.
func (r *Reader) Read() (Message, error) {
	for {
		line, err := r.line()
		if err != nil {
			return Message{}, err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		m, err := Decode(line)
		if err == nil && m.Size != 0 {
			return r.frame(m)
		}
		return m, err
	}
}

// LineReady reports whether a whole line that is not blank is buffered,
// so that Read returns without reading. A frame's line (Message.Size)
// counts as not ready: its frame may still be on its way.
func (r *Reader) LineReady() bool {
	b, _ := r.br.Peek(r.br.Buffered())
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return false
		}
		if line := bytes.TrimSpace(b[:i]); len(line) > 0 {
			return !frameAhead(line)
		}
		b = b[i+1:]
	}
}

// line returns the next line without its newline. The slice is valid until
// the next call. It holds at most max bytes of a line: a longer one is
// discarded as it is read (skipLine).
func (r *Reader) line() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		n := len(buf) + len(chunk) // of the line so far
		if err == nil {
			n-- // its newline
		}
		if n > r.max {
			return nil, r.skipLine(buf, chunk, err)
		}
		switch {
		case err == nil:
			if buf == nil {
				return chunk[:len(chunk)-1], nil
			}
			return append(buf, chunk[:len(chunk)-1]...), nil
		case errors.Is(err, bufio.ErrBufferFull):
			buf = append(buf, chunk...)
		case errors.Is(err, io.EOF) && len(buf)+len(chunk) > 0:
			// A last line without its newline still counts.
			return append(buf, chunk...), nil
		default:
			return nil, err
		}
	}
}

// skipLine discards the rest of a line found too long, up to and including
// its newline, and returns its *LineTooLongError; or the read error that
// ended it, but for EOF. buf and chunk are what was read of it, err the
// error of the ReadSlice that returned chunk. It keeps the line's first
// LongLineHead bytes and counts the rest.
func (r *Reader) skipLine(buf, chunk []byte, err error) error {
	head := make([]byte, 0, LongLineHead)
	keep := func(b []byte) { head = append(head, b[:min(len(b), LongLineHead-len(head))]...) }
	keep(buf)
	keep(chunk)
	size := len(buf) + len(chunk)
	for errors.Is(err, bufio.ErrBufferFull) {
		chunk, err = r.br.ReadSlice('\n')
		keep(chunk)
		size += len(chunk)
	}
	if err == nil {
		size-- // its newline
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	e := &LineTooLongError{Size: size, Max: r.max}
	e.Op, e.ID, e.Req = peek(head)
	return e
}

// Decode parses one line (without its newline).
func Decode(line []byte) (Message, error) {
	// A line without an op is an error, which decodeJSON reports.
	if m, ok := decodeFast(line); ok && m.Op != "" {
		return m, nil
	}
	return decodeJSON(line)
}

// decodeJSON is Decode by encoding/json: the reference that decodeFast
// must match, and the one path that reports errors.
func decodeJSON(line []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(line, &m); err != nil {
		return Message{}, &SyntaxError{Line: head(line), Err: err}
	}
	if m.Op == "" {
		return Message{}, &SyntaxError{Line: head(line), Err: errors.New(`no "op" field`)}
	}
	return m, nil
}

func head(b []byte) []byte {
	if len(b) > 120 {
		b = b[:120]
	}
	return bytes.Clone(b)
}

// ErrEncode is wrapped by Writer.Write when a message cannot be encoded (a
// payload or result that is not valid JSON); nothing was written.
var ErrEncode = errors.New("proto: cannot encode message")

// Writer encodes messages, one per line. It is safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer to w. w should not be buffered: each message is
// written with one Write call.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends m.
func (w *Writer) Write(m Message) error {
	b, err := Append(nil, m)
	if err != nil {
		return err
	}
	return w.WriteLines(b, string(m.Op))
}

// Append appends m, encoded as a line, to b. An error wraps ErrEncode, and
// b is returned as it was.
func Append(b []byte, m Message) ([]byte, error) {
	if line, ok := appendFast(b, m); ok {
		return line, nil
	}
	return appendJSON(b, m)
}

// appendJSON is Append by encoding/json: the reference that appendFast
// must match, and the one path that reports errors.
func appendJSON(b []byte, m Message) ([]byte, error) {
	line, err := json.Marshal(m)
	if err != nil {
		return b, fmt.Errorf("%w %s: %w", ErrEncode, m.Op, err)
	}
	return append(append(b, line...), '\n'), nil
}

// WriteLines sends lines made by Append, several messages in one Write;
// what names them in an error.
func (w *Writer) WriteLines(lines []byte, what string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.w.Write(lines); err != nil {
		return fmt.Errorf("proto: write %s: %w", what, err)
	}
	return nil
}
