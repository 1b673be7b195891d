package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// maxBurst bounds the outcomes the publisher takes at once.
const maxBurst = 256

// linger is how long the publisher waits for more outcomes to join a burst
// while more short jobs are running: their results are stored up to this
// much later, and the server spends less per job.
const linger = time.Millisecond

// publisher stores outcomes' states without waiting for the store's
// answers, so that stores pipeline; the acker waits for the answers in
// order. Its goroutine (run) owns the outcomes from finishing to acking: it
// takes them in bursts (see collect) and passes each burst on whole, so
// that a burst reaches the server in a few writes, not one per job, which
// costs the server far less per job. It runs until finishing is closed,
// then closes acking.
type publisher struct {
	finishing <-chan finishJob
	acking    chan<- []finishJob
	answers   *storeAnswers
	states    *states
	pace      *pace
	leases    *leases
	limits    *poolLimits
	maxState  int // the largest state the store takes: the server's max payload
	space     subject.Space
	typ       string
	log       *slog.Logger
}

func (p *publisher) run(context.Context) {
	defer close(p.acking)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for f := range p.finishing {
		burst := p.collect(f, timer)
		stores := p.answers.burst()
		for i := range burst {
			burst[i] = p.publish(burst[i], stores)
		}
		p.answers.seal(stores)
		p.acking <- burst
	}
}

// collect returns f and the outcomes that follow it at once, or within
// linger while more short jobs are held.
func (p *publisher) collect(f finishJob, timer *time.Timer) []finishJob {
	burst := make([]finishJob, 1, min(1+len(p.finishing), maxBurst))
	burst[0] = f
	var wait <-chan time.Time
	if p.moreSoon(len(burst)) {
		timer.Reset(linger)
		defer timer.Stop()
		wait = timer.C
	}
	for len(burst) < maxBurst {
		select {
		case f, ok := <-p.finishing:
			if !ok {
				return burst
			}
			burst = append(burst, f)
			continue
		default:
		}
		if wait == nil {
			return burst
		}
		select {
		case f, ok := <-p.finishing:
			if !ok {
				return burst
			}
			burst = append(burst, f)
		case <-wait:
			return burst
		}
	}
	return burst
}

// moreSoon reports whether outcomes beyond the n taken are on their way
// shortly: the pool's jobs are short and it holds more.
func (p *publisher) moreSoon(n int) bool {
	return p.pace.short() && p.leases.count() > n
}

// publish sends f's state to the store, as part of stores, and returns f
// with the state on its way.
func (p *publisher) publish(f finishJob, stores *storeBurst) finishJob {
	p.quarantine(&f)
	// A state is about 330 bytes for a short job; the buffer is kept until
	// the store answers, so each gets its own.
	data := encodeState(&f.held.state, make([]byte, 0, 512))
	if len(data) > p.maxState && len(f.held.state.Payload) > 0 {
		// A dead job's payload, kept for a requeue, is too large to keep
		// with the rest of its state (a MaxPayload near the server's
		// limit): the state must be stored, the payload is dropped.
		st := &f.held.state
		st.Error = wire.CutError(st.Error + fmt.Sprintf(" (its payload of %d bytes is not kept: the state would not fit the store)", len(st.Payload)))
		st.Payload = nil
		data = encodeState(st, data[:0])
	}
	f.data = data
	h := f.held
	h.mu.Lock()
	rev := h.rev
	h.mu.Unlock()
	if p.states.mayHaveEnded(&h.state, rev) {
		// Expecting no state would pass where an ended one expired: make
		// the store refuse it, so that the acker reads the state (and the
		// archive) first.
		rev = forceConflict
	}
	f.store = p.answers.send(stores, subject.KV(p.space.StateBucket(), h.state.ID), f.data, rev, p.states.ttl(h.state.Status), h.seq)
	return f
}

// quarantine makes dead a failed job that poison finds a poison job, kept
// with that evidence instead of killing more workers.
func (p *publisher) quarantine(f *finishJob) {
	st := &f.held.state
	bad, crashes := poison(st.Status, st.History, p.limits.crashes())
	if !bad {
		return
	}
	st.Status = wire.StatusDead
	st.Error = wire.CutError(fmt.Sprintf("poison job: its worker died in %d of its attempts (last: %s)", crashes, st.Error))
	st.Payload = keptPayload(st.PayloadRef, f.held.msg.Data)
	f.retry = -1
	p.log.Error("poison job quarantined as dead", "pool", p.typ, "job", st.ID, "crashes", crashes)
}

// keptPayload is payload as a dead job's state keeps it: as it is if it is
// JSON, else as a JSON string of its bytes. Nothing checked it before: a
// worker that takes payloads framed gets them as they are. A payload
// passed by reference (ref) is not kept: the state keeps its reference,
// and the bucket its object.
func keptPayload(ref *wire.PayloadRef, payload []byte) json.RawMessage {
	if ref != nil {
		return nil
	}
	if json.Valid(payload) {
		return payload
	}
	q, _ := json.Marshal(string(payload))
	return q
}

// stateRoom is what a job's state needs beside its result or payload:
// its errors, each at most wire.MaxError, its history of at most
// wire.MaxHistory attempts, its ids and times.
const stateRoom = 128 << 10

// encodeState appends st's JSON to b.
func encodeState(st *wire.Job, b []byte) []byte {
	data, err := st.AppendJSON(b)
	if err != nil {
		// The result is valid JSON from the broker; this cannot happen.
		panic(fmt.Sprintf("agent: encode job state: %v", err))
	}
	return data
}
