package wire

import (
	"bytes"
	"encoding/json"

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
}

// End is how one attempt ended: the job's status after it (succeeded,
// failed, dead or cancelled), and its batch, if any.
type End struct {
	ID     string `json:"id"`
	Status Status `json:"status"`
	Batch  string `json:"batch,omitempty"`
}

// AppendJSON appends e encoded as encoding/json encodes it, without
// reflection.
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
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// DecodeEnds decodes an Ends as encoding/json does, without reflection when
// data is as AppendJSON writes it with plain strings (printable ASCII, no
// escapes), which is how workerd writes every one. Anything else, errors
// included, is left to encoding/json.
func DecodeEnds(data []byte) (Ends, error) {
	if e, ok := decodeEndsFast(data); ok {
		return e, nil
	}
	var e Ends
	err := json.Unmarshal(data, &e)
	return e, err
}

// decodeEndsFast decodes data if it is exactly AppendJSON's layout with
// plain strings; false otherwise.
func decodeEndsFast(data []byte) (e Ends, ok bool) {
	p := endsParser{b: data}
	if !p.lit(`{"type":`) {
		return e, false
	}
	if e.Type, ok = p.str(); !ok || !p.lit(`,"jobs":[`) {
		return e, false
	}
	e.Jobs = []End{}
	if p.lit("]}") {
		return e, p.done()
	}
	for {
		var j End
		var status string
		if !p.lit(`{"id":`) {
			return e, false
		}
		if j.ID, ok = p.str(); !ok || !p.lit(`,"status":`) {
			return e, false
		}
		if status, ok = p.str(); !ok {
			return e, false
		}
		j.Status = Status(status)
		if p.lit(`,"batch":`) {
			if j.Batch, ok = p.str(); !ok {
				return e, false
			}
		}
		if !p.lit("}") {
			return e, false
		}
		e.Jobs = append(e.Jobs, j)
		if p.lit(",") {
			continue
		}
		return e, p.lit("]}") && p.done()
	}
}

// endsParser reads AppendJSON's layout of an Ends.
type endsParser struct {
	b []byte
	i int
}

// lit consumes s if the input goes on with it.
func (p *endsParser) lit(s string) bool {
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		return false
	}
	p.i += len(s)
	return true
}

// str consumes a string of printable ASCII without escapes, which decodes
// to its bytes as they are.
func (p *endsParser) str() (string, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", false
	}
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			s := string(p.b[p.i+1 : j])
			p.i = j + 1
			return s, true
		case c < 0x20, c > 0x7e, c == '\\':
			return "", false
		}
	}
	return "", false
}

// done reports whether the input is all consumed.
func (p *endsParser) done() bool { return p.i == len(p.b) }
