package wire

import (
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
