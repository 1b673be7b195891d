// Framed payloads: a job's payload written after its line rather than in
// it, so that neither end scans it (docs/protocol.md, "Framed payloads").

package proto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// inlineFrame bounds the payloads that WriteFramed copies behind their
// line into one write; a larger one is written from where it is.
const inlineFrame = 64 << 10

// AppendFramed appends m to b as Append does, but for a job op with a
// payload: its line carries the payload's Size, and the payload follows
// the line as it is, then a newline. The payload is not looked at: a
// framed worker gets what was submitted, JSON or not.
func AppendFramed(b []byte, m Message) ([]byte, error) {
	if m.Op != OpJob || len(m.Payload) == 0 {
		return Append(b, m)
	}
	line, err := Append(b, frameHead(m))
	if err != nil {
		return b, err
	}
	return append(append(line, m.Payload...), '\n'), nil
}

// frameHead is the line of m, a job op, whose payload follows it: its
// size in the place of the payload.
func frameHead(m Message) Message {
	m.Payload, m.Size = nil, len(m.Payload)
	return m
}

// WriteFramed sends m as AppendFramed encodes it. A large payload is
// written from where it is, after its line and under the same lock,
// rather than copied.
func (w *Writer) WriteFramed(m Message) error {
	if m.Op != OpJob || len(m.Payload) <= inlineFrame {
		b, err := AppendFramed(nil, m)
		if err != nil {
			return err
		}
		return w.WriteLines(b, string(m.Op))
	}
	line, err := Append(nil, frameHead(m))
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, part := range [][]byte{line, m.Payload, {'\n'}} {
		if _, err := w.w.Write(part); err != nil {
			return fmt.Errorf("proto: write %s: %w", m.Op, err)
		}
	}
	return nil
}

// frame reads the framed payload that follows m's line, of m.Size bytes,
// and its newline. Only a job's payload is framed: a frame after another
// op is read past and reported as a *SyntaxError; one over the Reader's
// limit is read past too, and reported as a *LineTooLongError that names
// m's op and id, so that the job can be answered.
func (r *Reader) frame(m Message) (Message, error) {
	switch {
	case m.Size < 0:
		return Message{}, &SyntaxError{Line: []byte(m.Op), Err: fmt.Errorf("a frame of %d bytes", m.Size)}
	case m.Size > r.maxFrame:
		if err := r.skip(m.Size); err != nil {
			return Message{}, err
		}
		return Message{}, &LineTooLongError{Size: m.Size, Max: r.maxFrame, Op: m.Op, ID: m.ID}
	case m.Op != OpJob:
		if err := r.skip(m.Size); err != nil {
			return Message{}, err
		}
		return Message{}, &SyntaxError{Line: []byte(m.Op), Err: errors.New("a frame after a line whose op has none")}
	}
	payload := make([]byte, m.Size)
	if _, err := io.ReadFull(r.br, payload); err != nil {
		return Message{}, unexpected(err)
	}
	if err := r.frameEnd(); err != nil {
		return Message{}, err
	}
	m.Payload, m.Size = payload, 0
	return m, nil
}

// skip reads past a frame of n bytes and its newline.
func (r *Reader) skip(n int) error {
	if _, err := r.br.Discard(n); err != nil {
		return unexpected(err)
	}
	return r.frameEnd()
}

// frameEnd reads the newline that ends a frame.
func (r *Reader) frameEnd() error {
	c, err := r.br.ReadByte()
	switch {
	case err != nil:
		return unexpected(err)
	case c != '\n':
		// The frame's length was wrong: what follows is not a line's
		// start either. The rest of that line is read past, so that the
		// next Read resynchronises at a newline: what is left of it, a
		// payload's bytes that may look like any message, is not read as
		// one.
		r.discardLine()
		return &SyntaxError{Line: []byte{c}, Err: errors.New("a frame not followed by a newline")}
	}
	return nil
}

// discardLine reads past the rest of the current line and its newline,
// or to the channel's end or error, which the next Read reports.
func (r *Reader) discardLine() {
	for {
		if _, err := r.br.ReadSlice('\n'); !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// unexpected makes an end of the channel inside a frame an unexpected one.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// frameAhead reports whether line, a buffered line, is a frame's line:
// its frame may not be buffered yet. It looks for the key only; a line
// with it elsewhere (a string of a message op) is taken for one too,
// which only costs LineReady a false.
func frameAhead(line []byte) bool {
	return bytes.Contains(line, []byte(`"size":`))
}
