package proto

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/conductor-run/conductor/internal/jsonfast"
)

// The channel carries tens of thousands of short lines a second, and
// reflection-based encoding/json showed up in both ends' profiles. The
// functions below handle the common lines by hand. They never report an
// error: for anything they are unsure of they decline, and Decode and Append
// use encoding/json, which decides. What they accept they must turn into
// exactly what encoding/json would (fast_test.go checks this).

// decodeFast parses line if it is a flat object whose keys are Message's json
// names, spelled exactly and each at most once, with plain values: strings
// without escapes, integers, true or false, and any JSON for payload, result
// and data (but not null). It reports false for any other line.
func decodeFast(line []byte) (Message, bool) {
	var m Message
	l := lexer{b: line}
	if !l.next('{') {
		return Message{}, false
	}
	var seen uint16 // the fields set so far, a bit each
	for {
		key, ok := l.str()
		if !ok || !l.next(':') {
			return Message{}, false
		}
		l.space()
		var bit uint16
		switch string(key) {
		case "op":
			bit = 1 << 0
			var s []byte
			s, ok = l.str()
			m.Op = op(s)
		case "id":
			bit = 1 << 1
			m.ID, ok = l.text()
		case "type":
			bit = 1 << 2
			m.Type, ok = l.text()
		case "payload":
			bit = 1 << 3
			m.Payload, ok = l.raw()
		case "attempt":
			bit = 1 << 4
			m.Attempt, ok = l.int()
		case "result":
			bit = 1 << 5
			m.Result, ok = l.raw()
		case "error":
			bit = 1 << 6
			m.Error, ok = l.text()
		case "permanent":
			bit = 1 << 7
			m.Permanent, ok = l.bool()
		case "data":
			bit = 1 << 8
			m.Data, ok = l.raw()
		case "prefetch":
			bit = 1 << 9
			m.Prefetch, ok = l.int()
		default:
			// Unknown keys may still name a field: encoding/json matches
			// them ignoring case.
			return Message{}, false
		}
		if !ok || seen&bit != 0 {
			return Message{}, false
		}
		seen |= bit
		if l.next(',') {
			continue
		}
		if !l.next('}') {
			return Message{}, false
		}
		l.space()
		return m, l.i == len(l.b)
	}
}

// knownOps are the ops decodeFast returns without allocating.
var knownOps = [...]Op{OpJob, OpShutdown, OpCancel, OpReady, OpDone, OpBusy, OpMessage}

// op returns s as an Op, sharing the constant when it is a known op: almost
// every line has one, and a string for each would be garbage.
func op(s []byte) Op {
	for _, o := range knownOps {
		if string(o) == string(s) {
			return o
		}
	}
	return Op(s)
}

// maxRawDepth bounds the nesting of a raw value that decodeFast takes.
// encoding/json refuses lines nested over 10000 deep, the enclosing object
// included: deeper values are left to it, with a wide margin.
const maxRawDepth = 1000

// lexer reads the tokens of one line for decodeFast. Its methods report
// false for whatever they do not handle.
type lexer struct {
	b []byte
	i int // the next byte to read
}

// space skips JSON whitespace.
func (l *lexer) space() {
	for l.i < len(l.b) {
		switch l.b[l.i] {
		case ' ', '\t', '\n', '\r':
			l.i++
		default:
			return
		}
	}
}

// next skips whitespace, then the byte c if it comes next.
func (l *lexer) next(c byte) bool {
	l.space()
	if l.i < len(l.b) && l.b[l.i] == c {
		l.i++
		return true
	}
	return false
}

// str reads a string without escapes and returns its content, a slice of the
// line. Strings that are not valid UTF-8 are declined: encoding/json replaces
// the bad bytes.
func (l *lexer) str() ([]byte, bool) {
	if !l.next('"') {
		return nil, false
	}
	start, ascii := l.i, true
	for ; l.i < len(l.b); l.i++ {
		switch c := l.b[l.i]; {
		case c == '"':
			s := l.b[start:l.i]
			l.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// text reads a string value.
func (l *lexer) text() (string, bool) {
	s, ok := l.str()
	return string(s), ok
}

// int reads an integer: a run of digits, maybe after a minus sign, as JSON
// writes them. Fractions and exponents are declined: encoding/json refuses
// them for an int.
func (l *lexer) int() (int, bool) {
	start := l.i
	if l.i < len(l.b) && l.b[l.i] == '-' {
		l.i++
	}
	digits := l.i
	for l.i < len(l.b) && '0' <= l.b[l.i] && l.b[l.i] <= '9' {
		l.i++
	}
	switch n := l.i - digits; {
	case n == 0, n > 1 && l.b[digits] == '0': // no digits, or a leading zero
		return 0, false
	}
	n, err := strconv.ParseInt(string(l.b[start:l.i]), 10, strconv.IntSize)
	return int(n), err == nil
}

// bool reads true or false.
func (l *lexer) bool() (bool, bool) {
	rest := l.b[l.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		l.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		l.i += 5
		return false, true
	}
	return false, false
}

// raw reads any JSON value but null, and returns a copy of its bytes, which
// is what encoding/json stores in a RawMessage. It finds where the value ends
// by counting brackets outside strings, then asks json.Valid about it.
func (l *lexer) raw() (json.RawMessage, bool) {
	start, depth := l.i, 0
	for ; l.i < len(l.b); l.i++ {
		switch l.b[l.i] {
		case '"':
			if !l.skipString() {
				return nil, false
			}
		case '{', '[':
			if depth++; depth > maxRawDepth {
				return nil, false
			}
			continue
		case '}', ']':
			if depth == 0 { // the end of a number or literal
				return l.rawValue(start)
			}
			depth--
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return l.rawValue(start)
			}
			continue
		default:
			continue
		}
		if depth == 0 { // past a closing quote or bracket
			l.i++
			return l.rawValue(start)
		}
	}
	return nil, false // cut short: the line is not JSON
}

// skipString moves from the opening quote of a string to its closing quote.
func (l *lexer) skipString() bool {
	for l.i++; l.i < len(l.b); l.i++ {
		switch l.b[l.i] {
		case '\\':
			l.i++
		case '"':
			return true
		}
	}
	return false
}

// rawValue returns a copy of the line from start to the current byte, if it
// is valid JSON and not null.
func (l *lexer) rawValue(start int) (json.RawMessage, bool) {
	v := l.b[start:l.i]
	if string(v) == "null" || !json.Valid(v) {
		return nil, false
	}
	return append(json.RawMessage(nil), v...), true
}

// appendFast appends m as encoding/json would, plus the newline. It declines
// (ok false, b untouched) when a raw field is one that encoding/json would
// change, by compacting or escaping it, or refuse.
func appendFast(b []byte, m Message) ([]byte, bool) {
	if !jsonfast.PlainRaw(m.Payload) || !jsonfast.PlainRaw(m.Result) || !jsonfast.PlainRaw(m.Data) {
		return b, false
	}
	b = append(b, `{"op":`...)
	b = jsonfast.AppendString(b, string(m.Op))
	if m.ID != "" {
		b = jsonfast.AppendString(append(b, `,"id":`...), m.ID)
	}
	if m.Type != "" {
		b = jsonfast.AppendString(append(b, `,"type":`...), m.Type)
	}
	if len(m.Payload) > 0 {
		b = append(append(b, `,"payload":`...), m.Payload...)
	}
	if m.Attempt != 0 {
		b = strconv.AppendInt(append(b, `,"attempt":`...), int64(m.Attempt), 10)
	}
	if len(m.Result) > 0 {
		b = append(append(b, `,"result":`...), m.Result...)
	}
	if m.Error != "" {
		b = jsonfast.AppendString(append(b, `,"error":`...), m.Error)
	}
	if m.Permanent {
		b = append(b, `,"permanent":true`...)
	}
	if len(m.Data) > 0 {
		b = append(append(b, `,"data":`...), m.Data...)
	}
	if m.Prefetch != 0 {
		b = strconv.AppendInt(append(b, `,"prefetch":`...), int64(m.Prefetch), 10)
	}
	return append(b, "}\n"...), true
}
