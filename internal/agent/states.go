package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// states are the source's reads and writes of the state bucket other than
// the publisher's pipelined ones: a redelivered job's earlier state and
// history, the skip count of a job put back, the dead index, and the
// synchronous writes that retry a failed store. It has no goroutine and no
// state of its own; its callers' goroutines wait on its round trips.
type states struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	space subject.Space
	typ   string
	log   *slog.Logger
}

// previous reads the stored state of job id, or nil.
func (s *states) previous(id string) *wire.Job {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		return nil
	}
	var prev wire.Job
	if json.Unmarshal(e.Value(), &prev) != nil {
		return nil
	}
	return &prev
}

// history reads the attempts a job made before this one.
func (s *states) history(id string) []wire.Attempt {
	if prev := s.previous(id); prev != nil {
		return prev.History
	}
	return nil
}

// withHistory puts the attempts a retried job made before this one in
// front of its state's history, read once per job (see heldJob.earlier).
func (s *states) withHistory(h *heldJob) {
	if !h.hasEarlier() {
		return // nothing before it: save the read
	}
	h.mu.Lock()
	earlier, read := h.earlier, h.readEarlier
	h.mu.Unlock()
	if !read {
		earlier = s.history(h.state.ID)
	}
	st := &h.state
	st.History = append(slices.Clone(earlier), st.History...)
	if n := len(st.History); n > wire.MaxHistory {
		st.History = st.History[n-wire.MaxHistory:]
	}
}

// recordSkip counts, in the stored state of h's job, a delivery that never
// reached a worker. It is a read-modify-write against concurrent writers
// (a submitter creating the queued state); should it fail, the next
// delivery counts one attempt too many, which is logged.
func (s *states) recordSkip(h *heldJob) {
	id := h.state.ID
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st := wire.Job{ID: id, Type: s.typ, Status: wire.StatusQueued, Batch: h.state.Batch, CreatedAt: h.state.CreatedAt}
		var rev uint64
		e, err := s.kv.Get(ctx, id)
		switch {
		case err == nil:
			if json.Unmarshal(e.Value(), &st) != nil {
				cancel()
				return // not a state of ours: leave it
			}
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			cancel()
			continue
		}
		st.Skipped++
		st.UpdatedAt = time.Now().UTC()
		data, _ := json.Marshal(&st)
		if rev == 0 {
			_, err = s.kv.Create(ctx, id, data)
		} else {
			_, err = s.kv.Update(ctx, id, data, rev)
		}
		cancel()
		if err == nil {
			return
		}
	}
	s.log.Warn("could not record a delivery that reached no worker; the job's next attempt number counts it", "job", id)
}

// putRunning stores a running state without waiting for the store's
// answer: the final state is published later on the same connection, and
// so lands after it.
func (s *states) putRunning(nc *nats.Conn, st *wire.Job) {
	if data, err := json.Marshal(st); err == nil {
		// No reply subject: the store does not answer.
		_ = nc.PublishMsg(&nats.Msg{Subject: subject.KV(s.space.StateBucket(), st.ID), Data: data})
	}
}

// put writes data to subj and waits for the store's answer, retrying with
// backoff up to tries times unless ctx ends first. what names the write in
// the log lines of its failures.
func (s *states) put(ctx context.Context, subj string, data []byte, tries int, what, id string) bool {
	delay := 100 * time.Millisecond
	for range tries {
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.js.Publish(pctx, subj, data)
		cancel()
		if err == nil {
			return true
		}
		s.log.Warn(what+"; retrying", "pool", s.typ, "job", id, "err", err)
		if !sleep(ctx, delay) {
			break
		}
		delay *= 2
	}
	return false
}

// store writes a job's final state synchronously: the acker's fallback
// when the pipelined write failed or went unanswered.
func (s *states) store(ctx context.Context, st *wire.Job, data []byte) bool {
	if s.put(ctx, subject.KV(s.space.StateBucket(), st.ID), data, 6, "store job state", st.ID) {
		return true
	}
	s.log.Error("job state not stored; the job will be redelivered", "pool", s.typ, "job", st.ID)
	return false
}

// indexDead indexes a dead job in the dead bucket, so that it can be
// listed and re-queued. Its state, payload included, is stored already; a
// failure here only leaves it out of the list, and is logged.
func (s *states) indexDead(ctx context.Context, st *wire.Job, data []byte) {
	if s.put(ctx, subject.KV(s.space.DeadBucket(), st.ID), data, 4, "index dead job", st.ID) {
		return
	}
	s.log.Error("dead job not indexed: GET /v1/jobs?status=dead will not list it; GET /v1/jobs/ID shows it", "pool", s.typ, "job", st.ID)
}

// sleep waits for d, reporting false if ctx ends first. Used on error
// paths only.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
