// Lines over the limit: what a Reader keeps of one, and what it tells.

package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// LongLineHead is how much of a line over the limit a Reader keeps, to tell
// what the line was (LineTooLongError's Op, ID and Req); the rest is
// discarded as it is read.
const LongLineHead = 4 << 10

// LineTooLongError reports a line over a Reader's limit, which was skipped.
// Op and ID are what its first LongLineHead bytes tell, read leniently (the
// fields in any order, the JSON valid up to them): a hint of what the line
// was, empty where its head does not tell. Nothing past the head was
// parsed, so the line's other fields are unknown.
type LineTooLongError struct {
	Size int // the line's length in bytes, without its newline
	Max  int // the Reader's limit
	Op   Op
	ID   string
	Req  uint64 // a reply's, or a request's
}

func (e *LineTooLongError) Error() string {
	return fmt.Sprintf("%v: %d bytes, over the limit of %d bytes", ErrLineTooLong, e.Size, e.Max)
}

func (e *LineTooLongError) Unwrap() error { return ErrLineTooLong }

// peek tells the op, id and req of the object whose first bytes are
// head, as far as head goes: the top-level "op" and "id" string values
// and "req" number, found in any order before the JSON ends or stops
// being valid. A field cut short by the end of head is not told.
func peek(head []byte) (op Op, id string, req uint64) {
	d := json.NewDecoder(bytes.NewReader(head))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return "", "", 0
	}
	for d.More() {
		t, err := d.Token() // a key: the decoder checks it is one
		if err != nil {
			return op, id, req
		}
		// Keys match as Decode matches them: ignoring case, the last of
		// several winning.
		key, _ := t.(string)
		isOp, isID := strings.EqualFold(key, "op"), strings.EqualFold(key, "id")
		switch {
		case isOp || isID:
			var v string
			if err := d.Decode(&v); err != nil {
				return op, id, req // not a string, or cut short
			}
			if isOp {
				op = Op(v)
			} else {
				id = v
			}
		case strings.EqualFold(key, "req"):
			// A number cut short by head's end reads as a shorter one:
			// told only if the JSON goes on after it.
			var v uint64
			if err := d.Decode(&v); err != nil || !d.More() && d.InputOffset() >= int64(len(head)) {
				return op, id, req
			}
			req = v
		default:
			if err := skipValue(d); err != nil {
				return op, id, req
			}
		}
	}
	return op, id, req
}

// skipValue reads the next value of d token by token, so that a value cut
// short still yields the tokens before it.
func skipValue(d *json.Decoder) error {
	depth := 0
	for {
		t, err := d.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}
