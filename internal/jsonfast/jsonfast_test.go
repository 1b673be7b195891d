package jsonfast

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// PlainRaw must agree with what json.Marshal makes of a RawMessage: true
// only where it writes the value unchanged.
func TestPlainRaw(t *testing.T) {
	for _, raw := range []string{
		``, `7`, `null`, `"a b"`, `{"msg":"a b"}`, `["\" ",1]`, `"\\"`, `"\\" `,
		` 7`, `{"a": 1}`, "[1,\n2]", `"<"`, `"&"`, "\"\u2028\"", `{"a":`, `"a`, `"\"`, `01`,
	} {
		m := json.RawMessage(raw)
		out, err := json.Marshal(m)
		want := len(raw) == 0 || (err == nil && bytes.Equal(out, m))
		if got := PlainRaw(m); got != want {
			t.Errorf("PlainRaw(%q) = %v, want %v", raw, got, want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "seq-1", "a b", `"`, `\`, "<a>&", "é", "\x00", "\xff", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("AppendString(%q) = %s, want x%s", s, got, want)
		}
	}
}

// Raw finds the end of a string value where encoding/json does, whatever
// runs of backslashes precede its quotes: strings of random quotes,
// backslashes and letters, encoded by json.Marshal, read back whole and
// followed by the rest of the line; and cut strings refused.
func TestRaw_StringsEndWhereJSONSays(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 5))
	alphabet := []byte{'"', '\\', 'a', '\\', '"', 0xc3, 0xa9, '/'}
	for range 5000 {
		s := make([]byte, rng.IntN(40))
		for i := range s {
			s[i] = alphabet[rng.IntN(len(alphabet))]
		}
		want, err := json.Marshal(string(s))
		if err != nil {
			t.Fatal(err)
		}
		line := append(append([]byte{}, want...), `,"next":1}`...)
		got, ok := NewLexer(line).Raw()
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("Raw of %q = %q, %v; want %q", line, got, ok, want)
		}
		if _, ok := NewLexer(want[:len(want)-1]).Raw(); ok {
			t.Fatalf("Raw took the cut string %q", want[:len(want)-1])
		}
	}
	for _, bad := range []string{`"\"`, `"\\\"`, `"abc\`, `"`} {
		if _, ok := NewLexer([]byte(bad)).Raw(); ok {
			t.Fatalf("Raw took the unclosed string %q", bad)
		}
	}
	for _, good := range []string{`""`, `"\\"`, `"\\\\"`, `"\"\\"`, `"a\"b"`} {
		got, ok := NewLexer([]byte(good + ` `)).Raw()
		if !ok || string(got) != good {
			t.Fatalf("Raw of %q = %q, %v", good, got, ok)
		}
	}
}
