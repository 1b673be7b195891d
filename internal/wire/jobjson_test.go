package wire

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// checkAppendJSON fails t unless j.AppendJSON gives what json.Marshal(j)
// gives, bytes and error, after a prefix already in the buffer.
func checkAppendJSON(t *testing.T, j *Job) {
	t.Helper()
	want, wantErr := json.Marshal(j)
	const prefix = "prefix:"
	got, err := j.AppendJSON([]byte(prefix))
	if !strings.HasPrefix(string(got), prefix) {
		t.Fatalf("AppendJSON lost the prefix: %q", got)
	}
	got = got[len(prefix):]
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("AppendJSON error %v, json.Marshal error %v\njob: %#v", err, wantErr, j)
	case err != nil && err.Error() != wantErr.Error():
		t.Fatalf("AppendJSON error %q, json.Marshal error %q", err, wantErr)
	case err != nil && len(got) != 0:
		t.Fatalf("AppendJSON appended %q with error %v", got, err)
	case !bytes.Equal(got, want):
		t.Fatalf("AppendJSON differs from json.Marshal\n got: %s\nwant: %s\njob: %#v", got, want, j)
	}
}

// TestJobFields fails when Job or Attempt change: AppendJSON must then
// change with them. It also checks that no type in them has its own JSON
// or text encoding, which AppendJSON does not honour.
func TestJobFields(t *testing.T) {
	fields := func(typ reflect.Type) []string {
		var s []string
		for f := range typ.Fields() {
			s = append(s, fmt.Sprintf("%s %s %s", f.Name, f.Type, f.Tag))
		}
		return s
	}
	wantJob := []string{
		`ID string json:"id"`,
		`Type string json:"type"`,
		`Status wire.Status json:"status"`,
		`Attempts int json:"attempts"`,
		`Result json.RawMessage json:"result,omitempty"`,
		`Error string json:"error,omitempty"`,
		`Batch string json:"batch,omitempty"`,
		`Priority wire.Priority json:"priority,omitempty"`,
		`Submitter string json:"submitter,omitempty"`,
		`Payload json.RawMessage json:"payload,omitempty"`,
		`PayloadRef *wire.PayloadRef json:"payload_ref,omitempty"`,
		`CreatedAt time.Time json:"created_at,omitzero"`,
		`UpdatedAt time.Time json:"updated_at,omitzero"`,
		`Skipped int json:"skipped,omitempty"`,
		`History []wire.Attempt json:"history,omitempty"`,
		`HistoryDropped int json:"history_dropped,omitempty"`,
		`Holder string json:"holder,omitempty"`,
	}
	wantAttempt := []string{
		`Attempt int json:"attempt"`,
		`Host string json:"host"`,
		`PID int json:"pid,omitempty"`,
		`StartedAt time.Time json:"started_at"`,
		`EndedAt time.Time json:"ended_at,omitzero"`,
		`Error string json:"error,omitempty"`,
		`Crashed bool json:"crashed,omitempty"`,
		`OOMKilled bool json:"oom_killed,omitempty"`,
		`Lost bool json:"lost,omitempty"`,
		`Superseded bool json:"superseded,omitempty"`,
	}
	if got := fields(reflect.TypeFor[Job]()); !slices.Equal(got, wantJob) {
		t.Errorf("Job's fields changed; update Job.AppendJSON and this test\n got: %q\nwant: %q", got, wantJob)
	}
	if got := fields(reflect.TypeFor[Attempt]()); !slices.Equal(got, wantAttempt) {
		t.Errorf("Attempt's fields changed; update Attempt.appendJSON and this test\n got: %q\nwant: %q", got, wantAttempt)
	}
	for _, typ := range []reflect.Type{
		reflect.TypeFor[Job](), reflect.TypeFor[Attempt](),
		reflect.TypeFor[Status](), reflect.TypeFor[Priority](),
	} {
		for _, ptr := range []reflect.Type{typ, reflect.PointerTo(typ)} {
			if ptr.Implements(reflect.TypeFor[json.Marshaler]()) ||
				ptr.Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
				t.Errorf("%s has its own encoding; AppendJSON must honour it", ptr)
			}
		}
	}
}

func TestJobAppendJSON(t *testing.T) {
	if got, err := (*Job)(nil).AppendJSON(nil); string(got) != "null" || err != nil {
		t.Errorf("nil job: %q, %v", got, err)
	}
	checkAppendJSON(t, &Job{})
	checkAppendJSON(t, typicalJob())
	checkAppendJSON(t, &Job{Result: json.RawMessage{}, Payload: json.RawMessage{}, History: []Attempt{}})
	checkAppendJSON(t, &Job{History: make([]Attempt, 3)})
	checkAppendJSON(t, &Job{PayloadRef: &PayloadRef{Object: "j1.\"<x>", Size: 1 << 40, Digest: DigestPrefix + "abc"}})
	checkAppendJSON(t, &Job{Result: json.RawMessage(`{`)})                      // invalid: an error
	checkAppendJSON(t, &Job{Result: json.RawMessage(`{"a": "<b>"}`)})           // compacted and escaped
	checkAppendJSON(t, &Job{Payload: json.RawMessage("\"\u2028\"")})            // escaped
	checkAppendJSON(t, &Job{ID: "a\"b\\c<d>&e\x00\x7f\u2028é\xff", Type: "日本"}) // escaped
	for _, tm := range []time.Time{
		time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
		time.Date(2024, 5, 6, 7, 8, 9, 120000000, time.FixedZone("", -(3*3600+30*60))),
		time.Date(2024, 5, 6, 7, 8, 9, 1, time.FixedZone("", 5*3600+45*60+30)), // seconds in the offset
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", 24*3600-1)),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),                       // year out of range
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),                    // year out of range
		time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),  // offset out of range
		time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("", -24*3600)), // offset out of range
		time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("", 100*3600)), // offset out of range
		time.Now(), // with a monotonic reading
		{},
	} {
		checkAppendJSON(t, &Job{CreatedAt: tm})
		checkAppendJSON(t, &Job{History: []Attempt{{StartedAt: tm, EndedAt: tm}}})
	}
	if paris, err := time.LoadLocation("Europe/Paris"); err == nil { // if the host has tzdata
		for _, month := range []time.Month{time.January, time.July} {
			checkAppendJSON(t, &Job{CreatedAt: time.Date(2024, month, 1, 12, 0, 0, 5000, paris)})
		}
	}
}

// TestJobAppendJSONRandom compares AppendJSON with json.Marshal on many
// random jobs: every field empty or set, with strings and raw values that
// need escaping, raw values that are invalid, and times encoding/json
// refuses.
func TestJobAppendJSONRandom(t *testing.T) {
	g := jobGen{rand.New(rand.NewPCG(1, 2))}
	const n = 5000
	var fast, failed int
	for range n {
		j := g.job()
		checkAppendJSON(t, j)
		if _, ok := j.appendFast(nil); ok {
			fast++
		} else if _, err := json.Marshal(j); err != nil {
			failed++
		}
	}
	// Each way through AppendJSON must be well trodden.
	t.Logf("%d random jobs: %d fast, %d slow, %d failing", n, fast, n-fast-failed, failed)
	if fast < n/5 || failed < n/10 || n-fast-failed < n/5 {
		t.Errorf("the generator needs tuning")
	}
}

// jobGen makes random jobs.
type jobGen struct{ r *rand.Rand }

func (g jobGen) job() *Job {
	j := &Job{
		ID:        g.str(),
		Type:      g.str(),
		Status:    Status(g.str()),
		Attempts:  g.int(),
		Result:    g.raw(),
		Error:     g.str(),
		Batch:     g.str(),
		Priority:  Priority(g.str()),
		Submitter: g.str(),
		Payload:   g.raw(),
		Skipped:   g.int(),
		Holder:    g.str(),
	}
	if g.r.IntN(2) == 0 {
		j.HistoryDropped = g.int()
	}
	if g.r.IntN(4) > 0 {
		j.CreatedAt = g.time()
	}
	if g.r.IntN(4) > 0 {
		j.UpdatedAt = g.time()
	}
	if n := g.r.IntN(27) - 1; n >= 0 {
		j.History = make([]Attempt, n)
		for i := range j.History {
			j.History[i] = Attempt{
				Attempt:    g.int(),
				Host:       g.str(),
				PID:        g.int(),
				StartedAt:  g.time(),
				Error:      g.str(),
				Crashed:    g.r.IntN(2) == 0,
				OOMKilled:  g.r.IntN(2) == 0,
				Lost:       g.r.IntN(3) == 0,
				Superseded: g.r.IntN(3) == 0,
			}
			if g.r.IntN(4) > 0 {
				j.History[i].EndedAt = g.time()
			}
		}
	}
	return j
}

// strPieces go into random strings; half of them need escaping.
var strPieces = []string{
	"seq-123", "noop", "succeeded", "host-1.example", " ", "~",
	"é", "日本", "🎉", "\"", "\\", "/", "<", ">", "&", "\x00", "\n", "\t", "\x1f", "\x7f",
	"\u2028", "\u2029", "\xff", "\xe2\x80", "\xed\xa0\x80", "\\u0041",
}

func (g jobGen) str() string {
	if g.r.IntN(3) == 0 {
		return ""
	}
	var s strings.Builder
	for range 1 + g.r.IntN(4) {
		if g.r.IntN(2) == 0 {
			s.WriteString(strPieces[g.r.IntN(6)]) // plain
		} else {
			s.WriteString(strPieces[g.r.IntN(len(strPieces))])
		}
	}
	return s.String()
}

func (g jobGen) int() int {
	switch g.r.IntN(5) {
	case 0:
		return 0
	case 1:
		return []int{math.MinInt, math.MaxInt, -1}[g.r.IntN(3)]
	}
	return g.r.IntN(1000)
}

// raw makes a RawMessage: nil, empty, valid JSON with or without spaces
// and characters to escape, or invalid JSON.
func (g jobGen) raw() json.RawMessage {
	switch g.r.IntN(8) {
	case 0:
		return nil
	case 1:
		return json.RawMessage{}
	case 2: // invalid
		v := g.value(0)
		switch i := g.r.IntN(len(v) + 1); g.r.IntN(3) {
		case 0:
			return v[:i]
		case 1:
			return slices.Insert(v, i, "{}[],:\"\\x0"[g.r.IntN(10)])
		default:
			return append(v, " 1"...)
		}
	}
	return g.value(0)
}

// value makes a valid JSON value, with random whitespace around its
// tokens when the generator says so.
func (g jobGen) value(depth int) []byte {
	var b []byte
	sp := func() {
		if g.r.IntN(8) == 0 {
			b = append(b, " \t\r\n"[g.r.IntN(4)])
		}
	}
	sp()
	switch n := g.r.IntN(8); {
	case n < 2 && depth < 3: // array
		b = append(b, '[')
		for i := range g.r.IntN(4) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, g.value(depth+1)...)
		}
		sp()
		b = append(b, ']')
	case n < 4 && depth < 3: // object
		b = append(b, '{')
		for i := range g.r.IntN(4) {
			if i > 0 {
				b = append(b, ',')
			}
			sp()
			b = append(b, g.jsonStr()...)
			sp()
			b = append(b, ':')
			b = append(b, g.value(depth+1)...)
		}
		sp()
		b = append(b, '}')
	case n < 6:
		b = append(b, g.jsonStr()...)
	default:
		b = append(b, []string{"49", "-0.5e10", "0", "true", "false", "null", "1E+2"}[g.r.IntN(7)]...)
	}
	sp()
	return b
}

// jsonStr makes a valid JSON string: escaped by encoding/json, or raw
// bytes that only need '"' and '\\' and control characters escaped.
func (g jobGen) jsonStr() []byte {
	s := g.str()
	if g.r.IntN(2) == 0 {
		b, _ := json.Marshal(s)
		return b
	}
	var b []byte
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			b = fmt.Appendf(b, `\u%04x`, c)
		} else {
			b = append(b, c)
		}
	}
	return append(b, '"')
}

var zones = []*time.Location{
	time.UTC, time.Local,
	time.FixedZone("CET", 3600),
	time.FixedZone("", -(9*3600 + 30*60)),
	time.FixedZone("", 5*3600+45*60+30),
	time.FixedZone("", 24*3600-1),
	time.FixedZone("", -(24*3600 - 1)),
	time.FixedZone("", 24*3600),   // refused
	time.FixedZone("", -100*3600), // refused
}

// time makes a time: zero, or in the years 1970 to 2100, or in years
// outside [0,9999] now and then; with no, some or all nanoseconds; in
// several zones, some with offsets RFC 3339 cannot express.
func (g jobGen) time() time.Time {
	if g.r.IntN(6) == 0 {
		return time.Time{}
	}
	year := 1970 + g.r.IntN(130)
	if g.r.IntN(300) == 0 {
		year = []int{-1, 0, 9999, 10000, -20000, 123456}[g.r.IntN(6)]
	}
	nsec := 0
	switch g.r.IntN(3) {
	case 0:
		nsec = g.r.IntN(1e9)
	case 1:
		nsec = g.r.IntN(1000) * 1e6
	}
	var zone *time.Location
	if g.r.IntN(30) == 0 {
		zone = zones[g.r.IntN(len(zones))]
	} else {
		zone = zones[g.r.IntN(5)] // RFC 3339 can express these
	}
	return time.Date(year, time.Month(1+g.r.IntN(12)), 1+g.r.IntN(31),
		g.r.IntN(24), g.r.IntN(60), g.r.IntN(60), nsec, zone)
}

func FuzzJobAppendJSON(f *testing.F) {
	f.Add("seq-123", "noop", "succeeded", []byte("49"), []byte(nil), int64(1700000000), int64(0), 0, "host-1")
	f.Add("a\"b<c>\xff", "日本", "dead", []byte(`{"a": [1, "<\u2028"]}`), []byte(`"x"`), int64(-62135596800), int64(1), 3600, "")
	f.Add("", "", "", []byte(`{`), []byte(` 1 `), int64(253402300800), int64(999999999), -86400, "\x00")
	f.Add("x", "y", "queued", []byte(`[1,{"b":null}]`), []byte("\"\xe2\x80\xa9\""), int64(0), int64(500), 86399, "h")
	f.Fuzz(func(t *testing.T, id, typ, status string, result, payload []byte, sec, nsec int64, offset int, host string) {
		tm := time.Unix(sec, nsec).In(time.FixedZone("", offset))
		checkAppendJSON(t, &Job{
			ID: id, Type: typ, Status: Status(status), Attempts: offset,
			Result: result, Error: host, Priority: Priority(typ), Payload: payload,
			CreatedAt: tm, UpdatedAt: tm.Add(time.Duration(nsec)),
			History: []Attempt{{Attempt: 1, Host: host, PID: int(sec), StartedAt: tm, EndedAt: tm, Error: id, Crashed: nsec < 0}},
		})
	})
}

// typicalJob is the state workerd stores for a no-op job that succeeded.
func typicalJob() *Job {
	start := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	return &Job{
		ID: "seq-123", Type: "noop", Status: StatusSucceeded, Attempts: 1,
		Result:    json.RawMessage("49"),
		CreatedAt: start.Add(-2 * time.Millisecond),
		UpdatedAt: start.Add(384 * time.Microsecond),
		History: []Attempt{{
			Attempt: 1, Host: "worker-7.example.net", PID: 48213,
			StartedAt: start, EndedAt: start.Add(384 * time.Microsecond),
		}},
	}
}

func BenchmarkJobAppendJSON(b *testing.B) {
	j := typicalJob()
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(j); err != nil {
				b.Fatal(err)
			}
		}
	})
	// workerd keeps each encoding until the store answers: a new buffer
	// each time, grown by append or made large enough.
	b.Run("AppendJSON/nil", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := j.AppendJSON(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON/cap512", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := j.AppendJSON(make([]byte, 0, 512)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON/reuse", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = j.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestCutError(t *testing.T) {
	t.Parallel()
	require.Equal(t, "short", CutError("short"))
	exact := strings.Repeat("x", MaxError)
	require.Equal(t, exact, CutError(exact))
	for _, s := range []string{strings.Repeat("x", 1<<20), strings.Repeat("é", MaxError)} {
		got := CutError(s)
		require.LessOrEqual(t, len(got), MaxError)
		require.True(t, utf8.ValidString(got), "cut on a rune boundary")
		var cut int
		_, err := fmt.Sscanf(got[strings.LastIndex(got, "["):], "[%d bytes cut]", &cut)
		require.NoError(t, err, got[len(got)-40:])
		require.Equal(t, len(s), strings.Index(got, " … [")+cut, "the marker counts the bytes cut")
	}
}
