// Package jsonfast holds what the hand-written JSON encoders of the job
// path (internal/proto's channel messages, internal/wire's job states)
// share: the tests that tell when a value can be written as it is, with
// the bytes encoding/json would write, and when encoding/json must do it.
package jsonfast

import "encoding/json"

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
