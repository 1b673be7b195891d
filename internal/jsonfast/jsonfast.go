// Package jsonfast holds what the hand-written JSON encoders and decoders
// of the job path (internal/proto's channel messages, internal/wire's job
// states and ends) share: the tests that tell when a value can be written
// as it is, with the bytes encoding/json would write, and when
// encoding/json must do it; and a lexer that reads what encoding/json
// would read the same way, and declines the rest.
package jsonfast

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// AppendString appends s as a JSON string, as encoding/json writes it.
// Printable ASCII other than '"', '\\', '<', '>' and '&' is copied; any
// other string is left to encoding/json, whose escapes (HTML characters,
// control characters, U+2028 and U+2029, invalid UTF-8) are the reference.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// PlainRaw reports whether encoding/json writes the json.RawMessage raw as
// it is: raw is empty, or valid JSON with no whitespace outside its strings
// (which encoding/json compacts away) and none of the characters it escapes
// (<, >, & and U+2028, U+2029, which start with the byte 0xE2). A space
// inside a string stays, as in {"msg":"a b"}; the other whitespace bytes
// are not valid there.
func PlainRaw(raw json.RawMessage) bool {
	inString, escaped := false, false
	for _, c := range raw {
		switch {
		case escaped:
			escaped = false
		case c == '\\' && inString:
			escaped = true
		case c == '"':
			inString = !inString
		case c == '<', c == '>', c == '&', c == 0xE2,
			!inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return len(raw) == 0 || json.Valid(raw)
}

// NewLexer returns a Lexer of b.
func NewLexer(b []byte) *Lexer { return &Lexer{b: b} }

// maxRawDepth bounds the nesting of a raw value that Raw takes.
// encoding/json refuses lines nested over 10000 deep, the enclosing object
// included: deeper values are left to it, with a wide margin.
const maxRawDepth = 1000

// Lexer reads the tokens of a JSON text for a hand-written decoder. Its
// methods report false for whatever they do not handle, and a decoder then
// leaves the text to encoding/json.
type Lexer struct {
	b []byte
	i int // the next byte to read
}

// Space skips JSON whitespace.
func (l *Lexer) Space() {
	for l.i < len(l.b) {
		switch l.b[l.i] {
		case ' ', '\t', '\n', '\r':
			l.i++
		default:
			return
		}
	}
}

// Next skips whitespace, then the byte c if it comes next.
func (l *Lexer) Next(c byte) bool {
	l.Space()
	if l.i < len(l.b) && l.b[l.i] == c {
		l.i++
		return true
	}
	return false
}

// Str reads a string without escapes and returns its content, a slice of the
// text. Strings that are not valid UTF-8 are declined: encoding/json replaces
// the bad bytes.
func (l *Lexer) Str() ([]byte, bool) {
	if !l.Next('"') {
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

// Text reads a string value.
func (l *Lexer) Text() (string, bool) {
	s, ok := l.Str()
	return string(s), ok
}

// Int reads an integer: a run of digits, maybe after a minus sign, as JSON
// writes them. Fractions and exponents are declined: encoding/json refuses
// them for an int.
func (l *Lexer) Int() (int, bool) {
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

// Uint reads an unsigned integer: a run of digits, as JSON writes them.
// A sign, a fraction or an exponent is declined: encoding/json refuses
// them for a uint64.
func (l *Lexer) Uint() (uint64, bool) {
	start := l.i
	for l.i < len(l.b) && '0' <= l.b[l.i] && l.b[l.i] <= '9' {
		l.i++
	}
	switch n := l.i - start; {
	case n == 0, n > 1 && l.b[start] == '0':
		return 0, false
	}
	n, err := strconv.ParseUint(string(l.b[start:l.i]), 10, 64)
	return n, err == nil
}

// Bool reads true or false.
func (l *Lexer) Bool() (bool, bool) {
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

// Raw reads any JSON value but null, and returns a copy of its bytes, which
// is what encoding/json stores in a RawMessage. It finds where the value ends
// by counting brackets outside strings, then asks json.Valid about it.
func (l *Lexer) Raw() (json.RawMessage, bool) {
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

// skipString moves from the opening quote of a string to its closing quote:
// the first quote after it that an even run of backslashes precedes (an
// odd run escapes it). The quotes are found with bytes.IndexByte, many
// bytes at a time: a payload's long strings are most of what the job path
// scans.
func (l *Lexer) skipString() bool {
	for l.i++; l.i < len(l.b); l.i++ {
		j := bytes.IndexByte(l.b[l.i:], '"')
		if j < 0 {
			l.i = len(l.b)
			return false
		}
		l.i += j
		// The opening quote ends any run of backslashes counted back.
		n := 0
		for k := l.i - 1; l.b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return true
		}
	}
	return false
}

// rawValue returns a copy of the text from start to the current byte, if it
// is valid JSON and not null.
func (l *Lexer) rawValue(start int) (json.RawMessage, bool) {
	v := l.b[start:l.i]
	if string(v) == "null" || !json.Valid(v) {
		return nil, false
	}
	return append(json.RawMessage(nil), v...), true
}

// Done skips whitespace and reports whether the text is all read.
func (l *Lexer) Done() bool {
	l.Space()
	return l.i == len(l.b)
}
