package wire

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/conductor-run/conductor/internal/jsonfast"
)

// AppendJSON appends the JSON encoding of j to b and returns the extended
// buffer: exactly what json.Marshal(j) gives, bytes and error. On an error
// it returns b as it was.
//
// workerd stores a job's state once per finished job, and json.Marshal's
// reflection, time formatting and allocations showed in its profiles. So
// this writes Job and Attempt by hand, following their struct tags, and
// calls json.Marshal(j) only for what it cannot be sure to write the same
// way: a result or payload to compact, escape or reject, or a time that
// Time.MarshalJSON refuses. A string to escape alone goes to json.Marshal.
//
// Job deliberately has no MarshalJSON method: json.Marshal(j) here would
// call it again, and every other encoding of Job would change with it.
// TestJobFields fails when Job or Attempt change, to keep this in step.
func (j *Job) AppendJSON(b []byte) ([]byte, error) {
	if j == nil {
		return append(b, "null"...), nil
	}
	if out, ok := j.appendFast(b); ok {
		return out, nil
	}
	data, err := json.Marshal(j)
	return append(b, data...), err
}

// appendFast appends j to b as AppendJSON does, or reports false if a value
// in j needs json.Marshal (what it appended then is of no use).
func (j *Job) appendFast(b []byte) ([]byte, bool) {
	e := jsonBuf{b: b}
	e.lit(`{"id":`)
	e.str(j.ID)
	e.lit(`,"type":`)
	e.str(j.Type)
	e.lit(`,"status":`)
	e.str(string(j.Status))
	e.lit(`,"attempts":`)
	e.int(j.Attempts)
	if len(j.Result) > 0 {
		e.lit(`,"result":`)
		e.raw(j.Result)
	}
	if j.Error != "" {
		e.lit(`,"error":`)
		e.str(j.Error)
	}
	if j.Batch != "" {
		e.lit(`,"batch":`)
		e.str(j.Batch)
	}
	if j.Priority != "" {
		e.lit(`,"priority":`)
		e.str(string(j.Priority))
	}
	if j.Submitter != "" {
		e.lit(`,"submitter":`)
		e.str(j.Submitter)
	}
	if len(j.Payload) > 0 {
		e.lit(`,"payload":`)
		e.raw(j.Payload)
	}
	if r := j.PayloadRef; r != nil {
		e.lit(`,"payload_ref":{"object":`)
		e.str(r.Object)
		e.lit(`,"size":`)
		e.int(int(r.Size))
		e.lit(`,"digest":`)
		e.str(r.Digest)
		e.lit("}")
	}
	if !j.CreatedAt.IsZero() {
		e.lit(`,"created_at":`)
		e.rfc3339(j.CreatedAt)
	}
	if !j.UpdatedAt.IsZero() {
		e.lit(`,"updated_at":`)
		e.rfc3339(j.UpdatedAt)
	}
	if j.Skipped != 0 {
		e.lit(`,"skipped":`)
		e.int(j.Skipped)
	}
	if len(j.History) > 0 {
		e.lit(`,"history":[`)
		for i := range j.History {
			if i > 0 {
				e.lit(",")
			}
			j.History[i].appendJSON(&e)
		}
		e.lit("]")
	}
	if j.HistoryDropped != 0 {
		e.lit(`,"history_dropped":`)
		e.int(j.HistoryDropped)
	}
	if j.Holder != "" {
		e.lit(`,"holder":`)
		e.str(j.Holder)
	}
	e.lit("}")
	return e.b, !e.slow
}

// appendJSON writes a as encoding/json does, to e.
func (a *Attempt) appendJSON(e *jsonBuf) {
	e.lit(`{"attempt":`)
	e.int(a.Attempt)
	e.lit(`,"host":`)
	e.str(a.Host)
	if a.PID != 0 {
		e.lit(`,"pid":`)
		e.int(a.PID)
	}
	e.lit(`,"started_at":`) // no omitzero: a zero time is written too
	e.rfc3339(a.StartedAt)
	if !a.EndedAt.IsZero() {
		e.lit(`,"ended_at":`)
		e.rfc3339(a.EndedAt)
	}
	if a.Error != "" {
		e.lit(`,"error":`)
		e.str(a.Error)
	}
	if a.Crashed {
		e.lit(`,"crashed":true`)
	}
	if a.OOMKilled {
		e.lit(`,"oom_killed":true`)
	}
	if a.Lost {
		e.lit(`,"lost":true`)
	}
	if a.Superseded {
		e.lit(`,"superseded":true`)
	}
	e.lit("}")
}

// jsonBuf is the buffer appendFast writes to. slow is set once a value
// needs json.Marshal for the whole job; the buffer's contents do not matter
// then.
type jsonBuf struct {
	b    []byte
	slow bool
}

// lit appends s as it is: punctuation and keys.
func (e *jsonBuf) lit(s string) { e.b = append(e.b, s...) }

func (e *jsonBuf) int(n int) { e.b = strconv.AppendInt(e.b, int64(n), 10) }

// str appends s as a JSON string, as encoding/json does.
func (e *jsonBuf) str(s string) { e.b = jsonfast.AppendString(e.b, s) }

// raw appends a json.RawMessage, or sets e.slow if encoding/json would not
// write it as it is (see jsonfast.PlainRaw): json.Marshal then does the
// whole job, and reports the error of an invalid one.
func (e *jsonBuf) raw(m json.RawMessage) {
	if !jsonfast.PlainRaw(m) {
		e.slow = true
		return
	}
	e.b = append(e.b, m...)
}

// rfc3339 appends t as Time.MarshalJSON does: quoted RFC 3339 with as many
// digits of nanoseconds as needed. Like it, it refuses (setting e.slow, for
// encoding/json to report the error) a year outside [0,9999] or a zone
// offset of 24 hours or more, which RFC 3339 cannot express.
func (e *jsonBuf) rfc3339(t time.Time) {
	if y := t.Year(); y < 0 || y > 9999 {
		e.slow = true
		return
	}
	if _, off := t.Zone(); off <= -24*60*60 || off >= 24*60*60 {
		e.slow = true
		return
	}
	e.b = append(e.b, '"')
	e.b = t.AppendFormat(e.b, time.RFC3339Nano)
	e.b = append(e.b, '"')
}
