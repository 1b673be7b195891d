package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// A stray is a message of the job stream that its consumer has acked past
// (its stream sequence is at or below the consumer's ack floor) and that
// the stream still holds: the consumer will never deliver it again, and the
// work queue, which removes a message when it is acked, never will remove
// it. Its job counts as queued for ever.
//
// nats-server v2.15.2 leaves them after a kill (docs/reliability.md,
// "Delivery"): its file store forgets tombstones of removed messages that
// an older block file still holds, and rebuilds those messages when it
// recovers from a crash; it reconciles a consumer's ack floor with its
// stream at start for interest streams only, not work queues.
//
// strayRepair looks for them at start and every Config.StrayCheck: for
// each of our consumers of the job stream, the messages of its subject from
// the stream's first sequence up to its ack floor (none, normally: one
// request per consumer). Each stray is repaired by what its job's state
// says (strayVerdict): a job that has ended loses the leftover message; a
// job that has not is claimed and published again, then the stray goes.
// It is a startstop.Service; its goroutine owns the passes, and the
// counters are atomics read by Strays.
type strayRepair struct {
	*startstop.Func
	js    jetstream.JetStream
	kv    jetstream.KeyValue // the state bucket
	space subject.Space
	every time.Duration
	limit int // strays looked at per pass
	// retention is how long a job's state is kept: a stray older than
	// half of it whose job has no state may be of a job whose state has
	// expired since it ended; it is removed, not run again.
	retention time.Duration
	log       *slog.Logger
	lead      *leadership // the passes run while this conductord leads
	// archived reads a state gone from the bucket; nil: there is no
	// archive (MemoryStorage). errArchiveCatchingUp: ask again later.
	archived func(id string) ([]byte, bool, error)
	// onPass, if set, is called after each pass: a test signal, nil in
	// production.
	onPass func(strayPass)

	deleted, requeued atomic.Uint64
}

// StrayCounts counts the stray job messages repaired since the conductor
// started (docs/reliability.md, "Delivery").
type StrayCounts struct {
	// Deleted counts messages left in the job stream by jobs that had
	// ended (or that another message of the job holds), removed.
	Deleted uint64
	// Requeued counts jobs that had not ended whose stray message was
	// published again, then removed.
	Requeued uint64
}

// Strays counts the stray job messages repaired since the conductor
// started.
func (c *Conductor) Strays() StrayCounts {
	if c.strays == nil {
		return StrayCounts{}
	}
	return StrayCounts{Deleted: c.strays.deleted.Load(), Requeued: c.strays.requeued.Load()}
}

// strayPass is what one pass found and did.
type strayPass struct {
	found, deleted, requeued, skipped int
	requeuedJobs                      []string // the first few
	err                               error    // the pass stopped early
}

// strayLimit bounds the strays one pass looks at; the next pass takes the
// rest.
const strayLimit = 1000

// strayTag tags the claim of a job published again (wire.Holder).
const strayTag = "stray"

// errArchiveCatchingUp is the archive's answer for a state it may not
// have yet: conductord has not taken the job ends that waited for it.
var errArchiveCatchingUp = errors.New("the archive is taking the job ends that waited for conductord")

func newStrayRepair(ctx context.Context, c *Conductor) (*strayRepair, error) {
	kv, err := c.js.KeyValue(ctx, c.space.StateBucket())
	if err != nil {
		return nil, fmt.Errorf("conductor: open the job state bucket: %w", err)
	}
	r := &strayRepair{
		js: c.js, kv: kv, space: c.space, every: c.cfg.StrayCheck, limit: strayLimit, retention: c.cfg.Retention,
		log: c.log, onPass: c.onStrayPass, lead: c.lead,
	}
	if a := c.archive; a != nil {
		r.archived = func(id string) ([]byte, bool, error) {
			state, ok, err := a.store.Get(id)
			if err == nil && !ok && !a.caughtUp.Load() {
				err = errArchiveCatchingUp
			}
			if err == nil && !ok {
				// Another conductord may have archived it.
				return a.peers(id)
			}
			return state, ok, err
		}
	}
	r.Func = startstop.NewFunc(r.run)
	return r, nil
}

// run makes the passes in each term this conductord leads.
func (r *strayRepair) run(ctx context.Context) { r.lead.each(ctx, r.term) }

// term makes a pass at once, then every r.every, until ctx ends.
func (r *strayRepair) term(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.once(ctx)
		t.Reset(r.every)
	}
}

// once makes a pass, counts and logs it (one line, only if it found
// something or failed).
func (r *strayRepair) once(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	p := r.pass(pctx)
	cancel()
	r.deleted.Add(uint64(p.deleted))
	r.requeued.Add(uint64(p.requeued))
	switch {
	case p.err != nil && ctx.Err() == nil:
		r.log.Warn("search the job stream for stray messages", "stream", r.space.JobStream(),
			"found", p.found, "deleted", p.deleted, "requeued", p.requeued, "skipped", p.skipped, "err", p.err)
	case p.found > 0:
		r.log.Warn("stray job messages repaired: the job stream held messages acked past by their consumer (a server crash brought them back); those of jobs that had ended were removed, the others queued again",
			"stream", r.space.JobStream(), "found", p.found, "deleted", p.deleted, "requeued", p.requeued,
			"skipped", p.skipped, "requeued_jobs", strings.Join(p.requeuedJobs, ","))
	}
	if r.onPass != nil {
		r.onPass(p)
	}
}

// pass looks for strays, up to r.limit, and repairs each.
func (r *strayRepair) pass(ctx context.Context) (p strayPass) {
	stream, err := r.js.Stream(ctx, r.space.JobStream())
	if err != nil {
		p.err = fmt.Errorf("open the job stream: %w", err)
		return p
	}
	state := stream.CachedInfo().State
	if state.Msgs == 0 {
		return p
	}
	// Each of our consumers, with the subject of its jobs and its ack
	// floor: the work queue lets no two consumers share a message, so
	// a message of that subject at or below the floor is acked, and
	// should be gone.
	type floor struct {
		subject string
		seq     uint64
	}
	var floors []floor
	list := stream.ListConsumers(ctx)
	for ci := range list.Info() {
		typ, prio := r.space.ParseConsumer(ci.Name)
		subj := r.space.JobAt(typ, prio)
		if typ == "" || ci.Config.FilterSubject != subj || ci.AckFloor.Stream < state.FirstSeq {
			continue
		}
		floors = append(floors, floor{subj, ci.AckFloor.Stream})
	}
	if err := list.Err(); err != nil {
		p.err = fmt.Errorf("list the job stream's consumers: %w", err)
		return p
	}
	for _, f := range floors {
		for seq := state.FirstSeq; seq <= f.seq && p.found < r.limit; {
			m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(f.subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				p.err = fmt.Errorf("read the job stream: %w", err)
				return p
			}
			if m.Sequence > f.seq {
				break
			}
			p.found++
			r.repair(ctx, stream, m, &p)
			seq = m.Sequence + 1
		}
	}
	return p
}

// strayAction is what becomes of a stray.
type strayAction int

const (
	// strayDelete removes it: its job has ended, or another message of the
	// job holds it.
	strayDelete strayAction = iota
	// strayRequeue publishes the job again (claiming its state first), then
	// removes it.
	strayRequeue
)

// strayVerdict says what becomes of a stray whose job's state is st (nil:
// it has none). holderAlive says whether the state is held by another
// message of the job that the stream still has: that one runs the job.
func strayVerdict(st *wire.Job, holderAlive bool) strayAction {
	switch {
	case st != nil && st.Status.Final():
		return strayDelete // the job ended: the message is a leftover
	case holderAlive:
		return strayDelete
	default:
		return strayRequeue // at least once: nobody else will run it
	}
}

// repair repairs the stray m, counting it in p. A stray whose job's state
// cannot be read now, or that cannot be claimed, is skipped: the next pass
// looks again.
func (r *strayRepair) repair(ctx context.Context, stream jetstream.Stream, m *jetstream.RawStreamMsg, p *strayPass) {
	id := wire.MessageJobID(m.Header, m.Sequence)
	st, rev, err := r.state(ctx, id)
	if err != nil {
		p.skipped++
		r.log.Debug("stray job message: state not read; left to the next pass", "job", id, "seq", m.Sequence, "err", err)
		return
	}
	alive := false
	if st != nil && !st.Status.Final() {
		if seq := wire.ParseHolder(st.Holder).Seq; seq != 0 && seq != m.Sequence {
			_, err := stream.GetMsg(ctx, seq)
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				p.skipped++
				return
			}
			alive = err == nil
		}
	}
	verdict := strayVerdict(st, alive)
	if st == nil && r.retention > 0 && time.Since(m.Time) > r.retention/2 {
		verdict = strayDelete
		r.log.Warn("stray job message of a job with no state, older than half the retention: its job ended long ago and its state expired, it seems; removed, not run again",
			"job", id, "seq", m.Sequence, "published", m.Time)
	}
	if verdict == strayDelete {
		if err := r.remove(ctx, stream, m.Sequence); err != nil {
			p.skipped++
			r.log.Debug("stray job message: not removed; left to the next pass", "job", id, "seq", m.Sequence, "err", err)
			return
		}
		p.deleted++
		return
	}
	if err := r.requeue(ctx, stream, m, id, st, rev); err != nil {
		p.skipped++
		r.log.Debug("stray job message: not queued again; left to the next pass", "job", id, "seq", m.Sequence, "err", err)
		return
	}
	p.requeued++
	if len(p.requeuedJobs) < 10 {
		p.requeuedJobs = append(p.requeuedJobs, id)
	}
}

// state reads the state of job id: from the bucket, with its revision, or
// from the archive (rev 0; a state there is final); nil if it has none.
func (r *strayRepair) state(ctx context.Context, id string) (st *wire.Job, rev uint64, err error) {
	var data []byte
	e, err := r.kv.Get(ctx, id)
	switch {
	case err == nil:
		data, rev = e.Value(), e.Revision()
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, err
	case r.archived == nil:
		return nil, 0, nil
	default:
		var ok bool
		if data, ok, err = r.archived(id); err != nil || !ok {
			return nil, 0, err
		}
	}
	st = new(wire.Job)
	if err := json.Unmarshal(data, st); err != nil {
		return nil, 0, fmt.Errorf("decode the state: %w", err)
	}
	return st, rev, nil
}

// requeue publishes the job of the stray m again, then removes m. A job
// with a state is claimed first, by a write that expects the revision
// read (so a newer state is never overwritten: the write fails, and the
// next pass looks again), as a requeue claims a dead job: queued, held by
// no message, ranked above every claim before it (wire.ClaimOver). The
// copy carries the claim's revision and Conductor-Requeued, so its first
// delivery reads the state and claims it over, keeping its history, as a
// redelivery does (docs/reliability.md, "Fencing"); its attempts count
// from 1 again.
func (r *strayRepair) requeue(ctx context.Context, stream jetstream.Stream, m *jetstream.RawStreamMsg, id string, st *wire.Job, rev uint64) error {
	var claimed uint64
	if st != nil {
		q := *st
		q.Status = wire.StatusQueued
		q.UpdatedAt = time.Now().UTC()
		q.Holder = wire.ClaimOver(rev, 0, strayTag).String()
		data, err := json.Marshal(&q)
		if err != nil {
			return err
		}
		if claimed, err = r.kv.Update(ctx, id, data, rev); err != nil {
			return fmt.Errorf("claim the state: %w", err)
		}
	}
	c := nats.NewMsg(m.Subject)
	for k, v := range m.Header {
		if !strings.HasPrefix(k, "Nats-Expected") {
			c.Header[k] = v
		}
	}
	c.Header.Set(names.HeaderJobID, id)
	// A fresh dedup id, the same for every copy of this stray.
	c.Header.Set(names.HeaderMsgID, id+"-stray-"+strconv.FormatUint(m.Sequence, 10))
	c.Header.Set(names.HeaderRequeued, "1")
	c.Header.Del(names.HeaderStateRev)
	if claimed > 0 {
		c.Header.Set(names.HeaderStateRev, strconv.FormatUint(claimed, 10))
	}
	c.Data = m.Data
	if _, err := r.js.PublishMsg(ctx, c); err != nil {
		return fmt.Errorf("publish the job again: %w", err)
	}
	return r.remove(ctx, stream, m.Sequence)
}

// remove removes message seq from the job stream; one gone already is
// removed.
func (r *strayRepair) remove(ctx context.Context, stream jetstream.Stream, seq uint64) error {
	err := stream.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	if _, gerr := stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}
