package jsonfast

import (
	"bytes"
	"encoding/json"
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
