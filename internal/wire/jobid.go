package wire

import (
	"strconv"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
)

// MessageJobID is the id of the job of a message on the job stream, whose
// headers are h and whose stream sequence is seq: its Conductor-Job-Id
// header, else its Nats-Msg-Id header, else "seq-N" with N its sequence. A
// header that is not a valid id (it could not be a state key) is passed
// over.
func MessageJobID(h Header, seq uint64) string {
	if id := h.Get(names.HeaderJobID); id != "" && subject.Token("job id", id) == nil {
		return id
	}
	if id := h.Get(names.HeaderMsgID); id != "" && subject.Token("job id", id) == nil {
		return id
	}
	return SeqJobID(seq)
}

// SeqJobID is the id of a job whose message names none: "seq-N", N being
// the message's stream sequence.
func SeqJobID(seq uint64) string { return "seq-" + strconv.FormatUint(seq, 10) }
