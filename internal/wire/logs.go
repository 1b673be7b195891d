package wire

import (
	"strconv"
	"strings"
)

// The tail of a pool's output that a host keeps (internal/agent,
// logtail.go), asked for on subject.LogTail by request.

// Bounds of a tail.
const (
	// MaxLogTail is the most lines a tail request may ask for, and the
	// most lines a host keeps per pool.
	MaxLogTail = 1000
	// MaxLogTailBytes bounds the encoded answer to a tail request; a
	// request may ask for less (LogTailRequest.MaxBytes).
	MaxLogTailBytes = 1 << 20
)

// LogTailRequest asks a host for the last Tail lines (1 to MaxLogTail) of
// pool Pool's output.
type LogTailRequest struct {
	Pool string `json:"pool"`
	Tail int    `json:"tail"`
	// MaxBytes bounds the answer's size, within MaxLogTailBytes; zero
	// means MaxLogTailBytes. The oldest lines are left out first.
	MaxBytes int `json:"max_bytes,omitempty"`
}

// LogTail is a host's answer to a LogTailRequest.
type LogTail struct {
	Host string `json:"host"`
	Pool string `json:"pool"`
	// Lines are the last lines kept, oldest first.
	Lines []LogLine `json:"lines"`
	// Cut is set when older lines that were asked for were left out to
	// keep the answer within its bound.
	Cut bool `json:"cut,omitempty"`
	// Epoch names the ring the lines come from (a new one at each start
	// of workerd or of the pool's ring) and Next is the number of the
	// line after the last one: every line is published with its number
	// in names.HeaderLogSeq, "<epoch>.<seq>", so that a reader drops the
	// live lines of the same epoch numbered below Next, which the tail
	// gave.
	Epoch string `json:"epoch"`
	Next  uint64 `json:"next"`
	// Error says why the host could not answer (no such pool, a bad
	// request); Lines is then empty.
	Error string `json:"error,omitempty"`
}

// LogSeq is the value of names.HeaderLogSeq of line seq of a ring of
// epoch: "<epoch>.<seq>".
func LogSeq(epoch string, seq uint64) string { return epoch + "." + strconv.FormatUint(seq, 10) }

// ParseLogSeq reads a value made by LogSeq; ok is false for any other.
func ParseLogSeq(v string) (epoch string, seq uint64, ok bool) {
	epoch, n, found := strings.Cut(v, ".")
	if !found || epoch == "" {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	return epoch, seq, err == nil
}
