package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// states are the source's reads and writes of the state bucket other than
// the publisher's pipelined ones: a redelivered job's earlier state and
// history, the skip count of a job put back, the dead index, and the
// synchronous writes that retry a failed store. It has no goroutine and no
// state of its own; its callers' goroutines wait on its round trips.
type states struct {
	svc   *hostsvc.Caller // writes through conductord if Proxied
	nc    *nats.Conn
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	space subject.Space
	typ   string
	// finalTTL is how long a final state stays in the bucket; once it has
	// gone, conductord's archive has it (see archived). 0: no archive.
	finalTTL time.Duration
	log      *slog.Logger
}

// read returns the stored state of job id and its revision; nil and 0 if
// there is none. A final state gone from the bucket is read from
// conductord's archive, with revision 0. A value that is not a job state
// is an error, and so is an archive that cannot be asked.
func (s *states) read(ctx context.Context, id string) (*wire.Job, uint64, error) {
	j, _, rev, err := s.readData(ctx, id)
	return j, rev, err
}

// readData is read, with the state as stored.
func (s *states) readData(ctx context.Context, id string) (*wire.Job, []byte, uint64, error) {
	data, rev, err := s.lookup(ctx, id)
	if err != nil || data == nil {
		return nil, nil, 0, err
	}
	var j wire.Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, nil, 0, fmt.Errorf("state of job %s is not a job state: %w", id, err)
	}
	return &j, data, rev, nil
}

// lookup returns the stored state of job id and its revision: from the
// bucket; else, if conductord archives final states, from its archive,
// with revision 0; nil if neither has it. A host with a credential of its
// own reads through conductord, which answers with its types' states
// only (hostsvc.Caller.Read).
func (s *states) lookup(ctx context.Context, id string) ([]byte, uint64, error) {
	if s.svc.Proxied() {
		return s.svc.Read(ctx, s.typ, id)
	}
	e, err := s.kv.Get(ctx, id)
	switch {
	case err == nil:
		return e.Value(), e.Revision(), nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, err
	case s.finalTTL == 0:
		return nil, 0, nil
	}
	data, err := s.archived(ctx, id)
	return data, 0, err
}

// archived asks conductord for the archived state of job id: nil if it
// has none.
func (s *states) archived(ctx context.Context, id string) ([]byte, error) {
	m, err := s.nc.RequestWithContext(ctx, s.space.ArchiveGet(), []byte(id))
	if err != nil {
		return nil, fmt.Errorf("ask the archive for job %s: %w", id, err)
	}
	if len(m.Data) == 0 {
		if st := m.Header.Get(names.HeaderStatus); st != "404" {
			return nil, fmt.Errorf("ask the archive for job %s: status %q %s", id, st, m.Header.Get(names.HeaderNATSDescription))
		}
		return nil, nil
	}
	return m.Data, nil
}

// write stores data, a state of status, as job id's state if its
// revision is still rev, and returns the new revision. seq is the stream
// sequence of the job's message (for a host that writes through
// conductord: wire.StoreItem.Seq). cur reports
// whether a state was read at rev: without one the key is created (past a
// deleted one, if need be). A state lives in the bucket for s.ttl(status).
// A conflict is an error for which isConflict is true.
func (s *states) write(ctx context.Context, id string, data []byte, rev uint64, cur bool, status wire.Status, seq uint64) (uint64, error) {
	ttl := s.ttl(status)
	if s.svc.Proxied() {
		op := wire.StoreState
		if !cur && rev == 0 {
			op = wire.StoreCreate
		}
		return s.svc.Store(ctx, s.typ, wire.StoreItem{Op: op, Key: id, Rev: rev, TTL: ttl, Seq: seq, Data: data})
	}
	switch {
	case !cur && rev == 0 && ttl > 0:
		return s.kv.Create(ctx, id, data, jetstream.KeyTTL(ttl))
	case !cur && rev == 0:
		return s.kv.Create(ctx, id, data)
	case ttl == 0:
		return s.kv.Update(ctx, id, data, rev)
	}
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subject.KV(s.kv.Bucket(), id), Data: data},
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// isConflict reports whether a conditional write failed because the state
// changed since the revision it expected.
func isConflict(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) ||
		errors.Is(err, errWrongLast) || errors.Is(err, hostsvc.ErrConflict) ||
		errors.As(err, &api) && (api.ErrorCode == jsErrWrongLast || api.ErrorCode == jsErrWrongLastConstant)
}

// claimResult is what claim made of a redelivered job.
type claimResult int

const (
	claimOK      claimResult = iota // claimed: run it
	claimEnded                      // the job has ended: ack it, do not run it
	claimAborted                    // the store could not be read or written: leave it
	claimBusy                       // another message of the job holds it, running: put it back
)

// claim claims the state of a redelivered (or requeued) job for the attempt
// of h, its new delivery (see wire.ClaimOver), before a worker runs it: it
// reads the state, counts the attempt, marks the attempts that never
// reported as lost, and stores it running. From then on no write of an
// earlier attempt replaces it.
func (s *states) claim(h *heldJob, delivered int) claimResult {
	st := &h.state
	own := st.History[len(st.History)-1]
	for range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		prev, rev, err := s.read(ctx, st.ID)
		if err != nil {
			cancel()
			s.log.Warn("read the state of a redelivered job", "pool", s.typ, "job", st.ID, "err", err)
			continue
		}
		if prev != nil && prev.Status.Final() {
			cancel()
			h.state = *prev // for its announcement
			return claimEnded
		}
		if prev != nil {
			if other := wire.ParseHolder(prev.Holder).Seq; other != 0 && h.seq != 0 && other != h.seq {
				cancel()
				return claimBusy
			}
		}
		if prev == nil {
			prev = &wire.Job{}
		}
		st.Skipped = prev.Skipped
		st.Attempts = max(delivered-prev.Skipped, 1)
		if delivered == 1 && !h.requeued && wire.ParseHolder(prev.Holder).Tag != h.tag {
			// A first delivery that claims: a delivery count the server
			// lost in a restart (replays) starts again at 1, or a copy of
			// a job published again; the attempts the state counts come
			// first.
			st.Attempts = max(st.Attempts, prev.Attempts+1)
		}
		own.Attempt = st.Attempts
		st.History = []wire.Attempt{own}
		holder := wire.ClaimOver(rev, h.seq, h.tag)
		st.Holder = holder.String()
		next := claimed(prev, st, h.requeued)
		data := encodeState(next, nil)
		newRev, err := s.write(ctx, st.ID, data, rev, rev != 0, next.Status, h.seq)
		cancel()
		if err == nil {
			h.state, h.holder, h.rev = *next, holder, newRev
			return claimOK
		}
		if !isConflict(err) {
			s.log.Warn("claim a redelivered job", "pool", s.typ, "job", st.ID, "err", err)
		}
	}
	s.log.Error("could not claim a redelivered job's state; it comes back when its lease ends", "pool", s.typ, "job", st.ID)
	return claimAborted
}

// recordSkip counts, in the stored state of h's job, a delivery that never
// reached a worker; if the delivery's claim stored the state running, it
// is queued again. It is a read-modify-write against concurrent writers
// (a submitter creating the queued state); should it fail, the next
// delivery counts one attempt too many, which is logged.
func (s *states) recordSkip(h *heldJob) {
	id := h.state.ID
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st := wire.Job{ID: id, Type: s.typ, Status: wire.StatusQueued, Batch: h.state.Batch, CreatedAt: h.state.CreatedAt}
		data, rev, err := s.lookup(ctx, id)
		switch {
		case err != nil:
			cancel()
			continue
		case data != nil && rev == 0:
			// No state in the bucket, one in the archive: the job has
			// ended, and its state must not be shadowed.
			cancel()
			return
		case data != nil:
			if json.Unmarshal(data, &st) != nil || st.Status.Final() {
				cancel()
				return // not a state of ours, or a job that has ended: leave it
			}
		}
		st.Skipped++
		st.UpdatedAt = time.Now().UTC()
		if st.Holder == h.state.Holder && len(st.History) > 0 {
			// Its own claim, or its first delivery's running state: the
			// attempt it announced never started, and counts no more.
			st.Status = wire.StatusQueued
			st.Attempts = max(st.History[len(st.History)-1].Attempt-1, 0)
			st.History = st.History[:len(st.History)-1]
		}
		next, _ := json.Marshal(&st)
		_, err = s.write(ctx, id, next, rev, rev != 0, wire.StatusQueued, h.seq)
		cancel()
		if err == nil {
			return
		}
	}
	s.log.Warn("could not record a delivery that reached no worker; the job's next attempt number counts it", "job", id)
}

// ttl is how long a state of status lives in the bucket: a final one
// finalTTL (conductord archives it), but for a dead one, which stays for
// the bucket's TTL so that it can be queued again (Client.Requeue reads
// it there); 0: the bucket's TTL.
func (s *states) ttl(status wire.Status) time.Duration {
	if !status.Final() || status == wire.StatusDead {
		return 0
	}
	return s.finalTTL
}

// mayHaveEnded reports whether a write of st that expects revision rev
// could pass over a job that has ended: one that expects no state (a job
// published without one), of a job queued long enough ago that a final
// state of it could have been written and expired from the bucket since
// (it is in the archive then).
func (s *states) mayHaveEnded(st *wire.Job, rev uint64) bool {
	return rev == 0 && s.finalTTL > 0 && time.Since(st.CreatedAt) > s.finalTTL/2
}

// forceConflict is a revision no state has: a write that expects it fails
// as a conflict, and its writer reads the state first.
const forceConflict = math.MaxUint64

// storeRunning stores the running state st of h's job, if the state is
// still at the revision h last knew, and moves h to the new one. A
// conflict is left to the final write: it reads the state then (see
// store).
func (s *states) storeRunning(h *heldJob, st *wire.Job, rev uint64) {
	if s.mayHaveEnded(st, rev) {
		return // the final write reads the state first
	}
	data, err := st.AppendJSON(make([]byte, 0, 512))
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	newRev, err := s.write(ctx, st.ID, data, rev, rev != 0, st.Status, h.seq)
	if err != nil {
		if !isConflict(err) {
			s.log.Warn("store a running state", "pool", s.typ, "job", st.ID, "err", err)
		}
		return
	}
	h.mu.Lock()
	if h.rev == rev {
		h.rev = newRev
	}
	h.mu.Unlock()
}

// put writes data to subj and waits for the store's answer, retrying with
// backoff up to tries times unless ctx ends first. what names the write in
// the log lines of its failures.
func (s *states) put(ctx context.Context, subj string, data []byte, tries int, what, id string, opts ...jetstream.PublishOpt) bool {
	return s.retry(ctx, tries, what, id, func(ctx context.Context) error {
		_, err := s.js.Publish(ctx, subj, data, opts...)
		return err
	})
}

// retry calls f, each call within 5s, with backoff up to tries times
// until it succeeds, unless ctx ends first.
func (s *states) retry(ctx context.Context, tries int, what, id string, f func(context.Context) error) bool {
	delay := 100 * time.Millisecond
	for range tries {
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := f(pctx)
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

// store writes the final state of f's job synchronously, the acker's
// fallback when the pipelined write failed or went unanswered. conflict
// says that it failed because the state changed: store reads it then and
// lets fence decide. It returns fenceWrite once the state is stored (f's
// data is then what was stored), another verdict if the outcome is not to
// be kept (recorded in the state as superseded), and ok false if the state
// could not be written.
func (s *states) store(ctx context.Context, f *finishJob, conflict bool) (v fenceVerdict, ok bool) {
	h := f.held
	st := &h.state
	h.mu.Lock()
	rev := h.rev
	h.mu.Unlock()
	cur := rev != 0
	if s.mayHaveEnded(st, rev) {
		conflict = true // read the state, and the archive, first
	}
	delay := 100 * time.Millisecond
	for range 6 {
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if conflict {
			now, nowData, nowRev, err := s.readData(wctx, st.ID)
			if err != nil {
				cancel()
				s.log.Warn("read a job state changed since it was read; retrying", "pool", s.typ, "job", st.ID, "err", err)
				if !sleep(ctx, delay) {
					break
				}
				delay *= 2
				continue
			}
			v, next := fence(now, nowRev, st, h.holder)
			if v == fenceStored {
				cancel()
				// Its end as stored: what the ends announce must be.
				*st, f.data = *next, nowData
				return fenceWrite, true
			}
			if v != fenceWrite {
				s.recordSuperseded(wctx, now, nowRev, st.History[len(st.History)-1], h.seq)
				cancel()
				return v, true
			}
			data := encodeState(next, make([]byte, 0, len(f.data)))
			*st, f.data, rev, cur, conflict = *next, data, nowRev, now != nil, false
		}
		_, err := s.write(wctx, st.ID, f.data, rev, cur, st.Status, h.seq)
		cancel()
		if err == nil {
			return fenceWrite, true
		}
		if isConflict(err) {
			conflict = true
			continue
		}
		s.log.Warn("store job state; retrying", "pool", s.typ, "job", st.ID, "err", err)
		if !sleep(ctx, delay) {
			break
		}
		delay *= 2
	}
	s.log.Error("job state not stored; the job will be redelivered", "pool", s.typ, "job", st.ID)
	return fenceWrite, false
}

// recordSuperseded adds own, an attempt whose outcome is not kept, to the
// history of cur, the state read at revision rev. It is a record, not the
// truth: should the state change meanwhile, it tries again twice, then
// gives up (the log line of the superseded write stays).
func (s *states) recordSuperseded(ctx context.Context, cur *wire.Job, rev uint64, own wire.Attempt, seq uint64) {
	for range 3 {
		if cur == nil || rev == 0 {
			return // none, or only in the archive: nothing to record in
		}
		data := encodeState(superseded(cur, own), nil)
		if _, err := s.write(ctx, cur.ID, data, rev, true, cur.Status, seq); err == nil || !isConflict(err) {
			return
		}
		var err error
		if cur, rev, err = s.read(ctx, cur.ID); err != nil {
			return
		}
	}
}

// announce publishes ends to the ends stream and waits for the server to
// have it, retrying a few times unless ctx ends: conductord counts them
// and archives the final states they carry. msgID, if set, makes the
// copies of one announcement one message of the stream (its
// deduplication window), so that a publish repeated after its answer was
// lost is not counted twice.
func (s *states) announce(ctx context.Context, data []byte, jobs int, msgID string) bool {
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if s.put(ctx, s.space.JobEnds(s.typ), data, 4, "announce job ends", "", opts...) {
		return true
	}
	s.log.Error("job ends not announced; their jobs will be redelivered and announced then", "pool", s.typ, "jobs", jobs)
	return false
}

// indexDead indexes a dead job in the dead bucket, so that it can be
// listed and re-queued. Its state, payload included, is stored already; a
// failure here only leaves it out of the list, and is logged.
func (s *states) indexDead(ctx context.Context, st *wire.Job, data []byte) {
	if s.svc.Proxied() {
		if s.retry(ctx, 4, "index dead job", st.ID, func(ctx context.Context) error {
			_, err := s.svc.Store(ctx, s.typ, wire.StoreItem{Op: wire.StoreDead, Key: st.ID, Data: data})
			return err
		}) {
			return
		}
	} else if s.put(ctx, subject.KV(s.space.DeadBucket(), st.ID), data, 4, "index dead job", st.ID) {
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
