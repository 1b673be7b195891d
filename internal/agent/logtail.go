package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// The tail of each pool's output that the host keeps, so that a reader
// who comes late sees what happened before (GET /v1/pools/{name}/logs).
// It holds the lines the forwarder lets out (those within Config.LogRate,
// the same that are logged and published), no others.
const (
	// maxRingLines is the most lines kept per pool.
	maxRingLines = wire.MaxLogTail
	// maxRingBytes bounds what the lines kept per pool cost, each counted
	// as its text plus ringLineCost. A line is at most 64 KiB and 12
	// bytes ("… [truncated]", pkg/broker's maxOutputLine), so at least
	// three always fit. A host holds at most its pools times this: the
	// pools are those of its config (a pool removed by a reload is
	// forgotten, its ring with it).
	maxRingBytes = 256 << 10
	// ringLineCost is what a kept line costs besides its text: its record
	// (time, numbers, the strings' headers; the host's and pool's text is
	// shared by every line).
	ringLineCost = 128
	// tailAnswerRoom is left, within the server's largest message, for
	// the answer's headers and envelope.
	tailAnswerRoom = 4 << 10
)

// ring is the last lines of one pool's output, numbered: the line added
// first in the ring's epoch is numbered 0. Its forwarder's mu guards it.
type ring struct {
	epoch string         // random, made with the ring
	buf   []wire.LogLine // circular; grows up to maxRingLines
	start int            // index in buf of the oldest line
	n     int            // lines held
	bytes int            // their cost (lineCost)
	next  uint64         // number of the next line added
}

func newRing() *ring {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return &ring{epoch: hex.EncodeToString(b[:])}
}

func lineCost(l *wire.LogLine) int { return len(l.Line) + ringLineCost }

// add keeps l, dropping the oldest lines as the bounds need, and returns
// its number.
func (r *ring) add(l wire.LogLine) uint64 {
	cost := lineCost(&l)
	for r.n > 0 && (r.n == maxRingLines || r.bytes+cost > maxRingBytes) {
		r.bytes -= lineCost(&r.buf[r.start])
		r.buf[r.start] = wire.LogLine{}
		r.start = (r.start + 1) % len(r.buf)
		r.n--
	}
	if r.n == len(r.buf) {
		grown := make([]wire.LogLine, min(max(2*len(r.buf), 16), maxRingLines))
		for i := range r.n {
			grown[i] = r.buf[(r.start+i)%len(r.buf)]
		}
		r.buf, r.start = grown, 0
	}
	r.buf[(r.start+r.n)%len(r.buf)] = l
	r.n++
	r.bytes += cost
	seq := r.next
	r.next++
	return seq
}

// last returns a copy of the last n lines (at most those held), oldest
// first.
func (r *ring) last(n int) []wire.LogLine {
	n = min(n, r.n)
	out := make([]wire.LogLine, n)
	for i := range n {
		out[i] = r.buf[(r.start+r.n-n+i)%len(r.buf)]
	}
	return out
}

// tail returns the answer to a request for pool's last n lines: nil lines
// and an error if the host runs no such pool. known tells whether the host
// runs pool: only then is a ring made for it (a request names any pool).
func (f *logForwarder) tail(pool string, n int, known bool) wire.LogTail {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.buckets[pool]
	if b == nil && !known {
		return wire.LogTail{Pool: pool, Error: fmt.Sprintf("no pool %q on this host", pool)}
	}
	if b == nil {
		b = f.bucketLocked(pool, time.Now())
	}
	return wire.LogTail{Pool: pool, Lines: b.ring.last(n), Epoch: b.ring.epoch, Next: b.ring.next}
}

// answerTail answers a wire.LogTailRequest on the host's LogTail subject.
// It runs on the subscription's goroutine: it copies at most
// wire.MaxLogTail lines under the forwarder's lock and encodes them
// outside it.
func (a *Agent) answerTail(m *nats.Msg) {
	// An answer goes to a command's reply subject only, the one kind a
	// host may publish on (subject.ControlReplies): the requester names
	// the reply subject, and the host's answer must not be a write it
	// may not make.
	if !subject.IsInbox(m.Reply) {
		return
	}
	var req wire.LogTailRequest
	var ans wire.LogTail
	if err := checkTailRequest(m.Data, &req); err != nil {
		ans.Pool, ans.Error = req.Pool, err.Error()
	} else {
		ans = a.logs.tail(req.Pool, req.Tail, a.findPool(req.Pool) != nil)
	}
	ans.Host = a.cfg.Host
	limit := wire.MaxLogTailBytes
	if req.MaxBytes > 0 {
		limit = min(limit, req.MaxBytes)
	}
	if mp := int(a.cfg.Conn.MaxPayload()); mp > 0 {
		limit = min(limit, mp-tailAnswerRoom)
	}
	data, err := encodeTail(ans, limit)
	if err != nil {
		a.log.Warn("cannot encode a tail", "pool", req.Pool, "err", err)
		return
	}
	if err := m.Respond(data); err != nil {
		a.log.Warn("cannot answer a tail request", "pool", req.Pool, "err", err)
	}
}

// checkTailRequest decodes data into req and checks it.
func checkTailRequest(data []byte, req *wire.LogTailRequest) error {
	if err := json.Unmarshal(data, req); err != nil {
		return fmt.Errorf("bad tail request: %w", err)
	}
	if err := subject.Token("pool", req.Pool); err != nil {
		return err
	}
	if req.Tail < 1 || req.Tail > wire.MaxLogTail {
		return fmt.Errorf("tail must be 1 to %d lines, not %d", wire.MaxLogTail, req.Tail)
	}
	return nil
}

// encodeTail encodes t within limit bytes, leaving its oldest lines out
// (and saying so in Cut) as needed; the envelope always fits. Each line is
// encoded once: the lines kept are spliced into the envelope's empty list,
// so that the answer is what json.Marshal would give for it.
func encodeTail(t wire.LogTail, limit int) ([]byte, error) {
	lines := t.Lines
	t.Lines, t.Cut = []wire.LogLine{}, true
	envelope, err := json.Marshal(t) // the larger, with "cut":true
	if err != nil {
		return nil, err
	}
	size := len(envelope)
	var kept [][]byte // newest first
	for i := len(lines) - 1; i >= 0; i-- {
		l, err := json.Marshal(lines[i])
		if err != nil {
			return nil, err
		}
		if size+len(l)+1 > limit {
			break
		}
		size += len(l) + 1
		kept = append(kept, l)
	}
	t.Cut = len(kept) < len(lines)
	if envelope, err = json.Marshal(t); err != nil {
		return nil, err
	}
	at := bytes.Index(envelope, emptyLines) + len(emptyLines) - 1 // at the list's ]
	out := make([]byte, 0, size)
	out = append(out, envelope[:at]...)
	for i := len(kept) - 1; i >= 0; i-- {
		out = append(out, kept[i]...)
		if i > 0 {
			out = append(out, ',')
		}
	}
	return append(out, envelope[at:]...), nil
}

// emptyLines is the key and empty list of a LogTail with no lines, as
// json.Marshal writes them: a host and pool are tokens, and a string with
// quotes in it is written escaped, so only the key matches.
var emptyLines = []byte(`"lines":[]`)
