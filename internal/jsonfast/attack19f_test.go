package jsonfast

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// Review 19f: Raw reads the raw values of lines a worker process writes
// and of the ends messages hosts send, both untrusted. skipString now
// finds a string's closing quote with bytes.IndexByte and the parity of
// the backslashes before it. Whatever the bytes, Raw must not panic, must
// read the value encoding/json reads, and must take nothing it refuses.

// oldRaw is Raw with the byte-at-a-time skipString it replaced: the
// reference the new one must agree with.
func oldRaw(b []byte) (json.RawMessage, int, bool) {
	l := &Lexer{b: b}
	skip := func() bool {
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
	start, depth := l.i, 0
	for ; l.i < len(l.b); l.i++ {
		switch l.b[l.i] {
		case '"':
			if !skip() {
				return nil, l.i, false
			}
		case '{', '[':
			if depth++; depth > maxRawDepth {
				return nil, l.i, false
			}
			continue
		case '}', ']':
			if depth == 0 {
				v, ok := l.rawValue(start)
				return v, l.i, ok
			}
			depth--
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				v, ok := l.rawValue(start)
				return v, l.i, ok
			}
			continue
		default:
			continue
		}
		if depth == 0 {
			l.i++
			v, ok := l.rawValue(start)
			return v, l.i, ok
		}
	}
	return nil, l.i, false
}

// checkRaw compares Raw of line with the reference and with encoding/json:
// a value taken is valid JSON, a prefix of the line, and what a
// json.Decoder reads first from it.
func checkRaw(t *testing.T, line []byte) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Raw of %q panicked: %v", trunc(line), r)
		}
	}()
	l := NewLexer(line)
	got, ok := l.Raw()
	want, wantI, wantOK := oldRaw(line)
	if ok != wantOK || !bytes.Equal(got, want) {
		t.Fatalf("Raw of %q = %q, %v; the byte-at-a-time reading gives %q, %v", trunc(line), trunc(got), ok, trunc(want), wantOK)
	}
	if ok && l.i != wantI {
		t.Fatalf("Raw of %q stops at %d, the reference at %d", trunc(line), l.i, wantI)
	}
	if !ok {
		return
	}
	if !json.Valid(got) || !bytes.HasPrefix(line, got) {
		t.Fatalf("Raw of %q took %q: not valid JSON, or not the line's start", trunc(line), trunc(got))
	}
	var first json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(line)).Decode(&first); err != nil || !bytes.Equal(first, got) {
		// The decoder may refuse what follows the value only if it
		// reads past it; a value it reads must be the same.
		if err == nil {
			t.Fatalf("Raw of %q took %q; encoding/json reads %q", trunc(line), trunc(got), trunc(first))
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 200 {
		return append(append([]byte{}, b[:200]...), "..."...)
	}
	return b
}

// TestAttack19f_RawEdgeStrings: runs of backslashes at the start and the
// end of the buffer, a quote right after the opening one, strings of
// backslashes only, lines cut inside an escape, invalid UTF-8 and control
// bytes inside strings, nested values ending in strings.
func TestAttack19f_RawEdgeStrings(t *testing.T) {
	var lines []string
	for n := range 12 {
		bs := strings.Repeat(`\`, n)
		lines = append(lines,
			`"`+bs, `"`+bs+`"`, `"`+bs+`""`, `"`+bs+`" `, `"`+bs+`"}`, `"`+bs+`",1`,
			`["`+bs+`"]`, `{"a":"`+bs+`"}`, `{"a":"`+bs+`"`, `"x`+bs+`"y"`, `"`+bs+`\u00`, bs+`"`, `"`+bs+`\"`,
		)
	}
	lines = append(lines, `""`, `"""`, `"" `, `"\u"`, `"\u12"`, `"\u1234"`, `"\x"`, `"\`, `\`, `"`, ``,
		"\"\xff\xfe\"", "\"a\x00b\"", "\"\xed\xa0\x80\"", "\"\n\"", `"\/"`, `[""]`, `["\\",""]`, `{"":""}`,
		`"a"b"`, `"\\"\\"`, `[1,"\\\\\"",{"k":"\\"}]`)
	for _, s := range lines {
		checkRaw(t, []byte(s))
		checkRaw(t, []byte(s+` `))
		// As a field of a line, after the colon: Raw from the middle.
		line := []byte(`{"payload":` + s + `,"n":1}`)
		l := NewLexer(line)
		if !l.Next('{') {
			t.Fatal("no brace")
		}
		if _, ok := l.Str(); !ok || !l.Next(':') {
			t.Fatal("no key")
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Raw in %q panicked: %v", line, r)
				}
			}()
			l.Space()
			got, ok := l.Raw()
			if ok && !json.Valid(got) {
				t.Fatalf("Raw in %q took invalid %q", line, got)
			}
		}()
	}
}

// TestAttack19f_RawRandomBytes: random lines of quotes, backslashes,
// brackets and other bytes read the same as byte at a time, with no
// panic.
func TestAttack19f_RawRandomBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 0xf))
	alphabet := []byte{'"', '\\', '\\', '"', 'a', 'u', '0', '{', '}', '[', ']', ',', ':', ' ', 0xff, 0xc3, 0xa9, '\n', 0}
	for range 40000 {
		b := make([]byte, rng.IntN(24))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		checkRaw(t, b)
	}
}

// TestAttack19f_RawHugeStrings: megabytes of a string, of backslash
// pairs, of escaped quotes, and such strings cut short, are read as
// encoding/json reads them.
func TestAttack19f_RawHugeStrings(t *testing.T) {
	const mb = 1 << 20
	for _, s := range []string{
		`"` + strings.Repeat("a", mb) + `"`,
		`"` + strings.Repeat(`\\`, mb/2) + `"`,
		`"` + strings.Repeat(`\"`, mb/2) + `"`,
		`"` + strings.Repeat(`\\`, mb/2) + `\"`,
		`"` + strings.Repeat(`\"`, mb/2),
		`[` + strings.Repeat(`"\\\"",`, mb/8) + `""]`,
		`"` + strings.Repeat("\xff", mb) + `"`,
	} {
		checkRaw(t, []byte(s))
		checkRaw(t, []byte(s+`,"n":1}`))
	}
}

// FuzzAttack19fRaw is the random comparison, run with -fuzz.
func FuzzAttack19fRaw(f *testing.F) {
	for _, s := range []string{`"\\"`, `"\"`, `""`, `{"a":"\\\""}`, `["\\",1]`, "\"\xff\\\"\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkRaw(t, b) })
}
