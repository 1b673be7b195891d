package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The lines of the throughput benchmark, the ones the fast paths are for.
const (
	jobLine  = `{"op":"job","id":"seq-123","type":"noop","payload":7,"attempt":1}`
	doneLine = `{"op":"done","id":"seq-123","result":49}`
)

var (
	jobMsg  = Message{Op: OpJob, ID: "seq-123", Type: "noop", Payload: json.RawMessage("7"), Attempt: 1}
	doneMsg = Message{Op: OpDone, ID: "seq-123", Result: json.RawMessage("49")}
)

// checkDecode fails t unless Decode gives what encoding/json gives for line:
// the same Message (nil and empty RawMessage told apart) and the same error.
// The Message must not share line, which a Reader reuses. It reports whether
// the fast path took the line.
func checkDecode(t testing.TB, line []byte) (fast bool) {
	t.Helper()
	want, wantErr := decodeJSON(line)
	buf := bytes.Clone(line)
	got, gotErr := Decode(buf)
	for i := range buf { // the Message must not share the line's buffer
		buf[i] = 'x'
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode(%q, %d bytes):\n got  %#v\n want %#v", head(line), len(line), got, want)
	}
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("Decode(%q, %d bytes): error %v, want %v", head(line), len(line), gotErr, wantErr)
	}
	m, ok := decodeFast(line)
	return ok && m.Op != ""
}

// checkAppend fails t unless Append gives the bytes (or the error) of
// encoding/json for m, leaving the prefix alone. It reports whether the fast
// path took m.
func checkAppend(t testing.TB, m Message) (fast bool) {
	t.Helper()
	prefix := []byte("prev\n")
	want, wantErr := appendJSON(bytes.Clone(prefix), m)
	got, gotErr := Append(bytes.Clone(prefix), m)
	if !bytes.Equal(got, want) {
		t.Fatalf("Append(%#v):\n got  %q\n want %q", m, got, want)
	}
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("Append(%#v): error %v, want %v", m, gotErr, wantErr)
	}
	_, fast = appendFast(nil, m)
	return fast
}

func TestDecode_Cases(t *testing.T) {
	t.Parallel()

	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	require.True(t, json.Valid([]byte(deep)), "valid alone, too deep inside a line")

	for _, c := range []struct {
		line string
		fast bool
	}{
		{jobLine, true},
		{doneLine, true},
		{`{"op":"ready","prefetch":4}`, true},
		{`{"op":"done","id":"a","error":"boom","permanent":true}`, true},
		{`{"op":"done","permanent":false,"attempt":0}`, true},
		{`{"op":"message","data":{"a":[1,"]}\"",{}],"b":null}}`, true},
		{" {\t\"op\" :\"job\" ,\n\"payload\"\r: [ 1 , 2 ] , \"attempt\":-0 } ", true},
		{`{"payload":"x","op":"job"}`, true},
		{`{"op":"done","result":"a\"b\\"}`, true},
		{`{"op":"done","result":-1.5e3}`, true},
		{`{"op":"custom","id":"héllo"}`, true},
		{`{"op":"lookup","req":7,"do":"get","name":"rates","key":"usd"}`, true},
		{`{"op":"reply","req":18446744073709551615,"value":{"a":1},"rev":3}`, true},
		{`{"op":"reply","req":18446744073709551616}`, false}, // overflow
		{`{"op":"reply","req":-1}`, false},
		{`{"op":"reply","req":7,"error":"no such key","code":404}`, true},
		{`{"op":"reply","req":7,"keys":["a","b"]}`, false},
		{`{"op":"reply","req":7,"value":1,"rev":2,"keep":true}`, true},
		{`{"op":"ready","prefetch":64,"cache":256}`, true},
		{`{"op":"drop","name":"rates","key":"usd"}`, true},
		{`{"op":"request","req":3,"command":"progress","data":{"done":5}}`, true},
		{`{"op":"count","counters":{"emails":3}}`, false},
		{`{"op":"job","attempt":9223372036854775807}`, true},
		{`{"op":"job","attempt":9223372036854775808}`, false}, // overflow
		{`{"op":"job","attempt":1.0}`, false},
		{`{"op":"job","attempt":1e2}`, false},
		{`{"op":"job","attempt":01}`, false},
		{`{"op":"job","attempt":"1"}`, false},
		{`{"op":"job","permanent":1}`, false},
		{`{"op":"job","payload":null}`, false},
		{`{"op":"job","id":null}`, false},
		{`{"op":"job","payload":` + deep + `}`, false},
		{`{"op":"job","payload":{"a":}}`, false},
		{`{"op":"job","payload":[1,2}`, false},
		{`{"op":"job","payload":tru}`, false},
		{`{"op":"job","payload":"x}`, false},
		{`{"op":"job","op":"done"}`, false},
		{`{"op":"job","id":"a","id":"b"}`, false},
		{`{"OP":"job"}`, false},
		{`{"op":"job","Payload":1}`, false},
		{`{"op":"job","extra":1}`, false},
		{`{"\u006fp":"job"}`, false},
		{`{"op":"job","id":"a\nb"}`, false},
		{`{"op":"job","id":"a\u00e9"}`, false},
		{"{\"op\":\"job\",\"id\":\"\xff\"}", false},
		{"{\"op\":\"job\",\"id\":\"a\tb\"}", false},
		{`{"op":"job"} x`, false},
		{`{"op":"job",}`, false},
		{`{"op":"job"`, false},
		{`{"op":""}`, false},
		{`{}`, false},
		{`[]`, false},
		{``, false},
	} {
		require.Equal(t, c.fast, checkDecode(t, []byte(c.line)), "fast path for %q", c.line)
	}
}

func TestAppend_Cases(t *testing.T) {
	t.Parallel()

	for _, c := range []struct {
		m    Message
		fast bool
	}{
		{jobMsg, true},
		{doneMsg, true},
		{Message{}, true},
		{Message{Op: OpReady, Prefetch: -3}, true},
		{Message{Op: OpDone, Error: `bad "<thing>" é`, Permanent: true}, true},
		{Message{Op: OpDone, ID: "\xff\x00\u2028"}, true},
		{Message{Op: OpJob, Payload: json.RawMessage{}}, true},
		{Message{Op: OpMessage, Data: json.RawMessage(`{"a":[1,"\u003c"]}`)}, true},
		{Message{Op: OpMessage, Data: json.RawMessage(`{"a": 1}`)}, false},
		{Message{Op: OpMessage, Data: json.RawMessage(`"<b>"`)}, false},
		{Message{Op: OpMessage, Data: json.RawMessage("\"\u2028\"")}, false},
		{Message{Op: OpDone, Result: json.RawMessage(`{not json`)}, false},
		{Message{Op: OpDone, Result: json.RawMessage(`null`)}, true},
		{Message{Op: OpLookup, Req: 7, Do: LookupSet, Name: "rates", Key: "usd", Value: json.RawMessage(`1.1`)}, true},
		{Message{Op: OpReply, Req: math.MaxUint64, Value: json.RawMessage(`{"a":1}`), Rev: 3}, true},
		{Message{Op: OpReply, Req: 1, Error: "no such key", Code: 404}, true},
		{Message{Op: OpReply, Req: 1, Keys: []string{"a"}}, false},
	} {
		require.Equal(t, c.fast, checkAppend(t, c.m), "fast path for %#v", c.m)
	}
}

// TestAppend_Random checks Append against encoding/json on random messages.
func TestAppend_Random(t *testing.T) {
	t.Parallel()

	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	const n = 20000
	for range n {
		if checkAppend(t, randMessage(r)) {
			fast++
		}
	}
	t.Logf("fast path: %d of %d", fast, n)
	require.Greater(t, fast, n/4, "the test must exercise the fast path")
}

// TestDecode_Random checks Decode against encoding/json on random lines: the
// encoding of random messages, hand-built objects with odd keys and values,
// and mutations of both.
func TestDecode_Random(t *testing.T) {
	t.Parallel()

	r := rand.New(rand.NewPCG(3, 4))
	fast := 0
	const n = 30000
	for range n {
		var line []byte
		if r.IntN(3) == 0 {
			m := randMessage(r)
			var err error
			if line, err = json.Marshal(m); err != nil {
				m.Payload, m.Result, m.Data = nil, nil, nil
				line, _ = json.Marshal(m)
			}
		} else {
			line = randObject(r)
		}
		if r.IntN(3) == 0 {
			line = mutate(r, line)
		}
		if checkDecode(t, line) {
			fast++
		}
	}
	t.Logf("fast path: %d of %d", fast, n)
	require.Greater(t, fast, n/10, "the test must exercise the fast path")
}

// fragments make up random strings: plain text, and what JSON escapes,
// HTML-escapes, replaces or refuses.
var fragments = []string{
	"seq-123", "a", "noop", " ", "é", "日本", "🙂", "\u2028", "\u2029", `"`, `\`,
	"\x00", "\x1f", "\t", "\n", "<", ">", "&", "\x7f", "\xff", "\xed\xa0\x80",
	"\xe2\x80", "/", "{", "}", "[", "]", ",", ":", `\u0041`,
}

func randString(r *rand.Rand) string {
	switch r.IntN(4) {
	case 0:
		return ""
	case 1:
		return "seq-" + strconv.Itoa(r.IntN(1e6))
	}
	var sb strings.Builder
	for range 1 + r.IntN(5) {
		sb.WriteString(fragments[r.IntN(len(fragments))])
	}
	return sb.String()
}

func randInt(r *rand.Rand) int {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return math.MaxInt
	case 2:
		return math.MinInt
	case 3:
		return -r.IntN(100)
	case 4:
		return int(r.Int64())
	}
	return r.IntN(10)
}

func randOp(r *rand.Rand) Op {
	if r.IntN(4) == 0 {
		return Op(randString(r))
	}
	return knownOps[r.IntN(len(knownOps))]
}

// randMessage returns a message with random fields, some of them unset,
// and raw fields that may be empty, spaced out or not JSON at all.
func randMessage(r *rand.Rand) Message {
	var m Message
	m.Op = randOp(r)
	set := func() bool { return r.IntN(2) == 0 }
	if set() {
		m.ID = randString(r)
	}
	if set() {
		m.Type = randString(r)
	}
	if set() {
		m.Payload = randRaw(r)
	}
	if set() {
		m.Attempt = randInt(r)
	}
	m.Redelivered = set()
	if set() {
		m.Result = randRaw(r)
	}
	if set() {
		m.Error = randString(r)
	}
	m.Permanent = set()
	if set() {
		m.Data = randRaw(r)
	}
	if set() {
		m.Prefetch = randInt(r)
	}
	if set() {
		m.Req = r.Uint64() >> r.IntN(64)
	}
	if set() {
		m.Do = randString(r)
	}
	if set() {
		m.Name = randString(r)
	}
	if set() {
		m.Key = randString(r)
	}
	if set() {
		m.Value = randRaw(r)
	}
	if set() {
		m.Rev = r.Uint64() >> r.IntN(64)
	}
	if r.IntN(16) == 0 {
		m.Keys = []string{randString(r), randString(r)}
	}
	if set() {
		m.Code = randInt(r)
	}
	if set() {
		m.Cache = randInt(r)
	}
	m.Keep = set()
	if set() {
		m.Command = randString(r)
	}
	if r.IntN(16) == 0 {
		m.Counters = map[string]float64{randString(r): float64(randInt(r))}
	}
	m.Messages = set()
	return m
}

var invalidJSON = []string{
	"{not json", "[1,", "tru", "'x'", `"open`, "1.", "01", `{"a":}`, "[1]]",
	"\"\x01\"", "NaN", "1 2", "{}}", `"\x"`,
}

func randRaw(r *rand.Rand) json.RawMessage {
	switch r.IntN(12) {
	case 0:
		return nil
	case 1:
		return json.RawMessage{}
	case 2:
		return json.RawMessage(invalidJSON[r.IntN(len(invalidJSON))])
	case 3:
		s := randJSON(r, 0, r.IntN(2) == 0)
		return json.RawMessage(s[:r.IntN(len(s)+1)]) // often cut short
	}
	return json.RawMessage(randJSON(r, 0, r.IntN(3) == 0))
}

// space returns JSON whitespace, or none, when spaced is set.
func space(r *rand.Rand, spaced bool) string {
	if !spaced {
		return ""
	}
	return [...]string{"", "", " ", "\n\t", "\r\n "}[r.IntN(5)]
}

var literals = []string{
	"0", "7", "-1", "49", "-0", "1.5", "1e2", "2.5E-3", "1.0",
	"123456789012345678901234567890", "true", "false", "null",
}

// randJSON returns a valid JSON value, with whitespace between its tokens
// if spaced.
func randJSON(r *rand.Rand, depth int, spaced bool) string {
	n := r.IntN(10)
	switch {
	case depth > 3 || n < 3:
		return literals[r.IntN(len(literals))]
	case n < 6:
		return quote(r, randString(r))
	}
	open, end := "[", "]"
	if n >= 8 {
		open, end = "{", "}"
	}
	var sb strings.Builder
	sb.WriteString(open + space(r, spaced))
	for i := range r.IntN(4) {
		if i > 0 {
			sb.WriteString(space(r, spaced) + "," + space(r, spaced))
		}
		if open == "{" {
			sb.WriteString(quote(r, randString(r)) + space(r, spaced) + ":" + space(r, spaced))
		}
		sb.WriteString(randJSON(r, depth+1, spaced))
	}
	sb.WriteString(space(r, spaced) + end)
	return sb.String()
}

// quote returns s as a JSON string, escaped as encoding/json does it or by
// hand, with the bytes that need no escape left raw, bad UTF-8 included.
func quote(r *rand.Rand, s string) string {
	if r.IntN(2) == 0 {
		b, _ := json.Marshal(s)
		return string(b)
	}
	var sb strings.Builder
	sb.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			sb.WriteString(`\` + string(c))
		case c == '\n' && r.IntN(2) == 0:
			sb.WriteString(`\n`)
		case c < 0x20 || (c == 'a' && r.IntN(2) == 0):
			fmt.Fprintf(&sb, `\u%04x`, c)
		case c == '/' && r.IntN(2) == 0:
			sb.WriteString(`\/`)
		default:
			sb.WriteByte(c)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// keys are the names randObject uses: Message's, others that encoding/json
// matches ignoring case, unknown ones, and escaped ones.
var keys = []string{
	"op", "id", "type", "payload", "attempt", "result", "error", "permanent", "data", "prefetch",
	"req", "do", "name", "key", "value", "rev", "keys", "code", "cache", "keep", "command", "counters", "messages",
	"op", "id", "payload", "result", "attempt", "req", "value",
	"OP", "Op", "ID", "Payload", "PERMANENT", "x", "ö", `\u006fp`, "op ", "",
}

// randObject returns a JSON object, or nearly one, of random keys in random
// order, with values of the right type and the wrong one, spaced out at
// random.
func randObject(r *rand.Rand) []byte {
	spaced := r.IntN(2) == 0
	var members []string
	if r.IntN(4) > 0 {
		members = append(members, `"op":`+quote(r, string(randOp(r))))
	}
	for range r.IntN(6) {
		key := keys[r.IntN(len(keys))]
		members = append(members, `"`+key+`"`+space(r, spaced)+":"+space(r, spaced)+randValue(r, key, spaced))
	}
	r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	var sb strings.Builder
	sb.WriteString(space(r, spaced) + "{" + space(r, spaced))
	for i, m := range members {
		if i > 0 {
			sb.WriteString(space(r, spaced) + "," + space(r, spaced))
		}
		sb.WriteString(m)
	}
	sb.WriteString(space(r, spaced) + "}" + space(r, spaced))
	return []byte(sb.String())
}

var numbers = []string{
	"0", "1", "-0", "42", "-7", "1.0", "1e2", "01", "-", "9223372036854775807",
	"9223372036854775808", "-9223372036854775808", "-9223372036854775809",
	"99999999999999999999", "0x10", "+1",
}

// randValue returns a value for key, most often of its type.
func randValue(r *rand.Rand, key string, spaced bool) string {
	if r.IntN(5) == 0 {
		return randJSON(r, 0, spaced)
	}
	switch strings.ToLower(key) {
	case "attempt", "prefetch", "req", "rev", "code", "cache":
		return numbers[r.IntN(len(numbers))]
	case "keys":
		return [...]string{`["a","b"]`, `[]`, "null", `"a"`, `[1]`}[r.IntN(5)]
	case "permanent", "keep", "messages":
		return [...]string{"true", "false", "null", "1", "tru", `"true"`}[r.IntN(6)]
	case "payload", "result", "data", "value":
		return string(randRaw(r))
	}
	if r.IntN(10) == 0 {
		return "null"
	}
	return quote(r, randString(r))
}

// mutate spoils line a little: cut short, a byte lost or added, a part
// repeated.
func mutate(r *rand.Rand, line []byte) []byte {
	line = bytes.Clone(line)
	if len(line) == 0 {
		return line
	}
	i := r.IntN(len(line))
	switch r.IntN(4) {
	case 0:
		return line[:i]
	case 1:
		return append(line[:i], line[i+1:]...)
	case 2:
		c := `{}[]",:\ 0-9.eax` + "\x00\xff\t"
		return append(line[:i], append([]byte{c[r.IntN(len(c))]}, line[i:]...)...)
	}
	j := i + r.IntN(len(line)-i+1)
	return append(line[:j], line[i:]...)
}

func FuzzAppend(f *testing.F) {
	f.Add("job", "seq-123", "noop", []byte("7"), 1, "", false, 0)
	f.Add("done", "a<b", "", []byte(`{"x": [1, "é"]}`), 0, "bo\"om", true, -1)
	f.Add("ready", "", "", []byte("{not json"), 0, "\xff", false, 4)
	f.Fuzz(func(t *testing.T, op, id, typ string, raw []byte, attempt int, errText string, permanent bool, prefetch int) {
		checkAppend(t, Message{
			Op: Op(op), ID: id, Type: typ, Payload: raw, Attempt: attempt, Redelivered: permanent, Result: raw,
			Error: errText, Permanent: permanent, Data: raw, Prefetch: prefetch,
		})
	})
}

func BenchmarkDecode(b *testing.B) {
	for _, c := range []struct{ name, line string }{{"job", jobLine}, {"done", doneLine}} {
		line := []byte(c.line)
		for _, impl := range []struct {
			name   string
			decode func([]byte) (Message, error)
		}{{"fast", Decode}, {"json", decodeJSON}} {
			b.Run(c.name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := impl.decode(line); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct {
		name string
		m    Message
	}{{"job", jobMsg}, {"done", doneMsg}} {
		for _, impl := range []struct {
			name   string
			append func([]byte, Message) ([]byte, error)
		}{{"fast", Append}, {"json", appendJSON}} {
			b.Run(c.name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				var buf []byte
				for b.Loop() {
					var err error
					if buf, err = impl.append(buf[:0], c.m); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
