package wire

import (
	"encoding/json"
	"strconv"

	"github.com/conductor-run/conductor/internal/jsonfast"
)

// Ends tells conductord how the attempts of a burst of jobs of one type
// ended, in one message on subject.Space.JobEnds: workerd sends one after
// the acks of each burst, next to the job events (one per job, for any
// subscriber), so that conductord counts the ends and finds the batches
// and waits they complete without taking every job event.
type Ends struct {
	Type string `json:"type"`
	Jobs []End  `json:"jobs"`
	// Superseded counts the outcomes of attempts that were not kept since
	// the last Ends: a newer attempt held the job, or it had ended.
	Superseded int `json:"superseded,omitempty"`
	// Again marks ends announced before: of a job found ended when its
	// message came again (its ack, or its first announcement, may have
	// been lost). conductord archives them, and counts only those it has
	// no record of.
	Again bool `json:"again,omitempty"`
}

// End is how one attempt ended: the job's status after it (succeeded,
// failed, dead or cancelled), and its batch, if any. A final end carries
// the job's state as stored, which conductord archives.
type End struct {
	ID     string          `json:"id"`
	Status Status          `json:"status"`
	Batch  string          `json:"batch,omitempty"`
	State  json.RawMessage `json:"state,omitempty"`
	// Payload names the object of a payload passed by reference, on the
	// end of a job that succeeded or was cancelled: conductord removes it
	// once the job's stored state says so (payloads.go).
	Payload string `json:"payload,omitempty"`
	// Archived is conductord's mark, never on the wire: State is archived
	// already (its store archived it as it wrote it, internal/hostsvc),
	// and is kept only to answer the job's waits.
	Archived bool `json:"-"`
}

// AppendJSON appends e encoded as encoding/json encodes it, without
// reflection; a State is written as it is (valid JSON, as Job.AppendJSON
// writes it), not compacted or HTML-escaped as encoding/json would.
func (e *Ends) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = jsonfast.AppendString(b, e.Type)
	b = append(b, `,"jobs":[`...)
	for i, j := range e.Jobs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = jsonfast.AppendString(b, j.ID)
		b = append(b, `,"status":`...)
		b = jsonfast.AppendString(b, string(j.Status))
		if j.Batch != "" {
			b = append(b, `,"batch":`...)
			b = jsonfast.AppendString(b, j.Batch)
		}
		if len(j.State) > 0 {
			b = append(append(b, `,"state":`...), j.State...)
		}
		if j.Payload != "" {
			// Rare: DecodeEnds reads it the slow way.
			b = jsonfast.AppendString(append(b, `,"payload":`...), j.Payload)
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if e.Superseded != 0 {
		b = strconv.AppendInt(append(b, `,"superseded":`...), int64(e.Superseded), 10)
	}
	if e.Again {
		b = append(b, `,"again":true`...)
	}
	return append(b, '}')
}

// DecodeEnds decodes an Ends as encoding/json does, without reflection when
// data has AppendJSON's keys in its order, with strings without escapes,
// which is how workerd writes every one. Anything else, errors included, is
// left to encoding/json.
func DecodeEnds(data []byte) (Ends, error) {
	if e, ok := decodeEndsFast(data); ok {
		return e, nil
	}
	var e Ends
	err := json.Unmarshal(data, &e)
	return e, err
}

// decodeEndsFast decodes data if it has AppendJSON's layout; false
// otherwise.
func decodeEndsFast(data []byte) (e Ends, ok bool) {
	l := jsonfast.NewLexer(data)
	if !l.Next('{') || !key(l, "type") {
		return e, false
	}
	if e.Type, ok = l.Text(); !ok || !l.Next(',') || !key(l, "jobs") || !l.Next('[') {
		return e, false
	}
	e.Jobs = []End{}
	if l.Next(']') {
		return e, l.Next('}') && l.Done()
	}
	for {
		var j End
		var status string
		if !l.Next('{') || !key(l, "id") {
			return e, false
		}
		if j.ID, ok = l.Text(); !ok || !l.Next(',') || !key(l, "status") {
			return e, false
		}
		if status, ok = l.Text(); !ok {
			return e, false
		}
		j.Status = Status(status)
		if l.Next(',') {
			k, kok := l.Str()
			if !kok || !l.Next(':') {
				return e, false
			}
			switch string(k) {
			case "batch":
				if j.Batch, ok = l.Text(); !ok {
					return e, false
				}
				if l.Next(',') && (!key(l, "state") || !raw(l, &j.State)) {
					return e, false
				}
			case "state":
				if !raw(l, &j.State) {
					return e, false
				}
			default:
				return e, false
			}
		}
		if !l.Next('}') {
			return e, false
		}
		e.Jobs = append(e.Jobs, j)
		if l.Next(',') {
			continue
		}
		if !l.Next(']') {
			return e, false
		}
		if l.Next(',') {
			if !key(l, "superseded") {
				return e, false
			}
			if e.Superseded, ok = l.Int(); !ok {
				return e, false
			}
		}
		return e, l.Next('}') && l.Done()
	}
}

// raw reads a JSON value as it is into v.
func raw(l *jsonfast.Lexer, v *json.RawMessage) bool {
	r, ok := l.Raw()
	if ok {
		*v = r
	}
	return ok
}

// key reads the object key name and its colon.
func key(l *jsonfast.Lexer, name string) bool {
	k, ok := l.Str()
	return ok && string(k) == name && l.Next(':')
}
