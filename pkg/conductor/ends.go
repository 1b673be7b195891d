package conductor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
)

// endsTaker takes the job ends that workerd announces a burst at a time
// (wire.Ends) from the ends stream, once for all that conductord does with
// them: the counters, the batch ends, and the waits of its Client
// (jobEnds). Being a stream with a durable consumer, the ends announced
// while conductord was away wait for it. It does not take the job events,
// one message per job, that workerd publishes for any other subscriber:
// under load they were a tenth of conductord's CPU.
//
// An ends message is acked only once what it changed is stored: its final
// states archived (before it is counted), and the counts of its type
// saved with its stream sequence (stats). The taker holds the messages it
// counted, and flushes them endsFlushEvery, or at once when endsFlushAt
// wait: one save of the counts, then the acks, confirmed by the server,
// by its acker (endsacker.go), which then drops the acked sequences from
// the stats. An ends message that comes back (conductord killed between
// the save and the ack) is archived again, but not counted again: its
// sequence is in the saved stats.
//
// It is a startstop.Service: its goroutine takes the ends from Start
// until Stop, and owns two more, joined before it returns: the reader of
// the consumer's messages, and the acker. At Stop it flushes once more.
type endsTaker struct {
	*startstop.Func
	c       *Conductor
	cons    jetstream.Consumer
	backlog uint64 // the ends waiting at start
	taken   uint64 // the ends taken since start; the taker's goroutine owns it
	lease   time.Duration
	begun   uint64 // the term (leadership.termNumber) begin last ran for; the taker's goroutine owns it after Start
	// floor is the consumer's ack floor as last read, and floorRead
	// when; the taker's goroutine owns them (mayTakeAgain).
	floor     uint64
	floorRead time.Time
	// pruneFloor is the ack floor the last prune read, which the next
	// applies (the taker's goroutine owns it).
	pruneFloor uint64
}

// heldEnds is an ends message taken and not yet acked: typ is the type
// it counted under ("" if it counted nothing), seq its stream sequence.
type heldEnds struct {
	m   jetstream.Msg
	typ string
	seq uint64
}

// caughtUp tells the archive once the taker has taken as many ends as
// waited at its start.
func (e *endsTaker) caughtUp(taken uint64) {
	if e.c.archive != nil && taken >= e.backlog {
		e.c.archive.caughtUp.Store(true)
	}
}

// endsBatch and endsMaxBytes bound the ends messages the taker has on its
// way at once: one can be megabytes (the final states it carries), up to
// the server's largest message (8 MiB), which the bytes must let through.
const (
	endsBatch    = 256
	endsMaxBytes = 16 << 20
	// endsMaxAckPending bounds the ends delivered and not acked, held by
	// the taker or its acker.
	endsMaxAckPending = 4 * endsBatch
)

// The taker flushes (saves the counts, then acks) endsFlushEvery after
// it took the first ends of a flush, or once endsFlushAt are held; a
// flush whose save failed is tried again endsSaveRetry later, and the
// taker takes no more while endsMaxAckPending are held.
const (
	endsFlushEvery = 200 * time.Millisecond
	endsFlushAt    = endsBatch
	endsSaveRetry  = time.Second
	// endsPruneEvery is how often at most the taker reads the consumer's
	// ack floor to drop the unacked sequences below it, when the stats
	// keep more than the consumer may have unacked.
	endsPruneEvery = 10 * time.Second
)

// endsLease is how long an ends message delivered and not acked waits
// before it is delivered again: one delivered to a conductord killed
// before it took it comes back this long after.
const endsLease = 30 * time.Second

// Ends announced again wait, endsAgainDelay at a time, until every ends
// message before them is acked (mayTakeAgain); the consumer's ack floor
// is read for it at most every endsFloorEvery.
const (
	endsAgainDelay = time.Second
	endsFloorEvery = 200 * time.Millisecond
)

// endsMaxDeliver is how many times ends are taken before they are given
// up: with archiveRetry between, about 100 minutes of a failing archive.
const endsMaxDeliver = 1200

func newEndsTaker(ctx context.Context, c *Conductor) (*endsTaker, error) {
	lease := endsLease
	if c.endsLease > 0 {
		lease = c.endsLease
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.space.EndsStream(), jetstream.ConsumerConfig{
		Durable:       subject.EndsConsumer,
		Description:   "conductord: job ends to count and archive",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       lease,
		MaxAckPending: endsMaxAckPending,
		// Ends the archive keeps refusing (a disk that stays full) are
		// given up after this many tries, rather than held for ever.
		MaxDeliver: endsMaxDeliver,
	})
	if err != nil {
		return nil, fmt.Errorf("conductor: create the job ends consumer: %w", err)
	}
	e := &endsTaker{c: c, cons: cons, lease: lease}
	if term := c.lead.termNumber(); term > 0 {
		// Leading from the start (Start tried for the lease first): the
		// counts and the archive are ready when Start returns.
		if err := e.begin(ctx); err != nil {
			return nil, err
		}
		e.begun = term
	} else if c.archive != nil {
		// Another leads: the ends are its to take; a state this
		// conductord's archive has not is asked of the others.
		c.archive.caughtUp.Store(true)
	}
	e.Func = startstop.NewFunc(e.run)
	if err := e.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	return e, nil
}

// run takes the ends in each term this conductord leads (leader.go);
// while another leads, the ends wake the waits only (endsFeed), and while
// it leads, the feed wakes the submissions' waits alone.
func (e *endsTaker) run(ctx context.Context) {
	e.c.lead.each(ctx, func(term context.Context) {
		e.c.feedEnds(false)
		defer e.c.feedEnds(true)
		if n := e.c.lead.termNumber(); n != e.begun {
			if err := e.begin(term); err != nil {
				if term.Err() == nil {
					e.c.lead.abdicate(fmt.Sprintf("the job ends cannot be taken: %v", err))
				}
				return
			}
			e.begun = n
		}
		e.term(term)
		if e.c.archive != nil {
			e.c.archive.caughtUp.Store(true) // the next leader's archive answers for the ends it takes
		}
	})
}

// begin reads what the previous leader (or this conductord's previous
// run) left: the counts it saved, and the consumer's ack floor and
// backlog.
func (e *endsTaker) begin(ctx context.Context) error {
	if err := e.c.stats.reload(ctx); err != nil {
		return err
	}
	info, err := e.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the job ends consumer: %w", err)
	}
	// The ends that waited: until they are taken, the archive cannot say
	// a state is not in it.
	e.backlog, e.taken = info.NumPending+uint64(info.NumAckPending), 0
	e.floor, e.floorRead = info.AckFloor.Stream, time.Time{}
	e.pruneFloor = info.AckFloor.Stream
	e.caughtUp(0)
	// The ends acked before a kill whose acks the stats had not saved
	// do not come back.
	e.c.stats.ackedTo(info.AckFloor.Stream)
	return nil
}

// term takes the ends until ctx ends: the term is over, or the taker stops.
func (e *endsTaker) term(ctx context.Context) {
	it := e.messages(ctx)
	if it == nil {
		return
	}
	// At the term's end the messages already pulled are still passed on
	// (Drain, not Stop), to be put back at once for the next leader.
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	msgs := make(chan jetstream.Msg)
	acks := make(chan []heldEnds, 1)
	confirmed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { e.read(it, msgs) })
	wg.Go(func() { e.ackAll(acks, confirmed) })
	e.take(ctx, msgs, acks, confirmed)
	close(acks)
	wg.Wait()
	// The sequences acked by the last flush are saved dropped: a restart
	// after a stop keeps none.
	e.c.stats.save()
}

// messages opens the consumer's messages, trying again every second
// until ctx ends (then nil).
func (e *endsTaker) messages(ctx context.Context) jetstream.MessagesContext {
	for {
		it, err := e.cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(endsBatch, endsMaxBytes))
		if err == nil {
			return it
		}
		e.c.log.Error("take the job ends; trying again in a second", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// read passes the messages of it to msgs until it is stopped, then
// closes msgs.
func (e *endsTaker) read(it jetstream.MessagesContext, msgs chan<- jetstream.Msg) {
	defer close(msgs)
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			e.c.log.Warn("take the job ends", "err", err)
			continue
		}
		msgs <- m
	}
}

// take handles the messages of msgs, and flushes those it holds to acks,
// until ctx ends; then it flushes a last time. The messages msgs still
// passes then are put back (Nak), for the next leader or run to take at
// once.
func (e *endsTaker) take(ctx context.Context, msgs <-chan jetstream.Msg, acks chan<- []heldEnds, confirmed <-chan struct{}) {
	var held []heldEnds
	timer := time.NewTimer(endsFlushEvery)
	timer.Stop()
	armed := false
	arm := func(d time.Duration) {
		if !armed {
			timer.Reset(d)
			armed = true
		}
	}
	defer timer.Stop()
	var pruned time.Time
	flush := func() {
		timer.Stop()
		armed = false
		if e.c.stats.unackedLen() > endsMaxAckPending && time.Since(pruned) > endsPruneEvery {
			pruned = time.Now()
			e.prune()
		}
		held = e.flush(held, acks)
		if len(held) > 0 {
			arm(endsSaveRetry)
		}
	}
	for {
		in := msgs
		if len(held) >= endsMaxAckPending {
			in = nil // until a flush saves
		}
		select {
		case <-ctx.Done():
			flush()
			// Taken by no one yet: back to the consumer at once, for the
			// next leader, not after their ack wait.
			for m := range msgs {
				_ = m.Nak()
			}
			return
		case m, ok := <-in:
			if !ok {
				flush()
				return
			}
			if h, ok := e.takeOne(m); ok {
				held = append(held, h)
			}
			if len(held) >= endsFlushAt {
				flush()
			} else if len(held) > 0 {
				arm(endsFlushEvery)
			}
		case <-confirmed:
			arm(endsFlushEvery) // save the acked sequences dropped
		case <-timer.C:
			armed = false
			flush()
		}
	}
}

// takeOne archives the final states of m's ends and counts them, unless
// counted already, and passes them to the batch watcher and the waits; it
// returns m to hold until the counts are saved. Ends that could not be
// archived are put back, not held.
func (e *endsTaker) takeOne(m jetstream.Msg) (heldEnds, bool) {
	if e.c.leaveEnds != nil && e.c.leaveEnds(m) {
		return heldEnds{}, false
	}
	h := heldEnds{m: m}
	var delivered uint64
	if md, err := m.Metadata(); err == nil {
		h.seq, delivered = md.Sequence.Stream, md.NumDelivered
	}
	ends, ok := e.c.decodeEnds(m.Subject(), m.Data())
	if ok && ends.Again {
		if !e.mayTakeAgain(h.seq, delivered) {
			if err := m.NakWithDelay(endsAgainDelay); err != nil {
				e.c.log.Warn("put back job ends announced again; they come back when their lease ends", "err", err)
			}
			return h, false
		}
		if e.c.reaper != nil {
			// Before the ends known already are left out: the end of a
			// job cancelled while queued (Client.Cancel announced it, with
			// no object) names its payload's object only when a host
			// takes its message, announced again. The reaper reads the
			// job's state before it removes anything, and a removal made
			// twice is none.
			e.c.reaper.ended(ends)
		}
		ends = e.c.unknownEnds(ends)
	}
	if ok && e.c.archive != nil {
		// Archived again if it comes back: a second record of a job's
		// final state, which Get reads as the first.
		if err := e.c.archive.put(ends); err != nil {
			// Taken again later: the final states must be archived
			// before they leave the state bucket.
			e.c.log.Error("archive final job states; trying again in a while", "err", err)
			if err := m.NakWithDelay(archiveRetry); err != nil {
				e.c.log.Warn("put back job ends not archived; they come back when their lease ends", "err", err)
			}
			return h, false
		}
	}
	if ok {
		if e.c.storage != nil {
			e.c.storage.noteEnds(ends)
		}
		h.typ = ends.Type
		e.c.stats.countEnds(h.seq, ends)
		e.c.jobEnds(ends)
		if e.c.reaper != nil && !ends.Again {
			e.c.reaper.ended(ends)
		}
	}
	e.taken++
	e.caughtUp(e.taken)
	return h, true
}

// flush saves the counts, then passes the messages held whose type's
// counts are stored to the acker, and returns those still to save.
func (e *endsTaker) flush(held []heldEnds, acks chan<- []heldEnds) []heldEnds {
	failed := e.c.stats.save()
	if e.c.stats.fenced.Load() {
		// Its held ends are not acked: they come back to the leader.
		e.c.lead.depose("the job counts were written by another conductord")
	}
	if len(held) == 0 {
		return held
	}
	ack := make([]heldEnds, 0, len(held))
	keep := held[:0]
	for _, h := range held {
		if failed[h.typ] {
			keep = append(keep, h)
		} else {
			ack = append(ack, h)
		}
	}
	if len(ack) > 0 {
		acks <- ack
	}
	return keep
}

// prune drops the unacked sequences below the consumer's ack floor as the
// previous prune (or the term's begin) read it, endsPruneEvery ago or more
// within a term: acks applied whose confirmations were lost. Not the floor
// it reads now: the server writes its consumers' state to its files on a
// timer (within a fraction of a second, not synced), so a kill of the
// server may yet take the newest acks under it back, as ackSettle keeps
// confirmed ones. begin applies the floor it reads at once: after a
// restart of conductord, and of its embedded server, the server read it
// from its files; a term taken over from another conductord, the server
// still up, applies a floor a kill could yet take back (a known gap,
// narrow: a kill of the server within a fraction of a second).
func (e *endsTaker) prune() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := e.cons.Info(ctx)
	if err != nil {
		e.c.log.Warn("read the job ends consumer's ack floor", "err", err)
		return
	}
	e.c.stats.ackedTo(e.pruneFloor)
	e.pruneFloor = info.AckFloor.Stream
	e.floor = max(e.floor, info.AckFloor.Stream)
}

// mayTakeAgain reports whether the ends announced again of sequence seq,
// delivered this many times, may be taken now: once every ends message
// before them is acked. Ends announced again are counted for the jobs
// the archive has no record of, and an earlier message of the same job,
// delivered to a conductord killed before it took it, comes back only
// after its lease: taken first, the ends announced again would count the
// job, and the earlier message count it once more. Ends that have waited
// past a lease are taken anyway: what was delivered before them has come
// back by then, and a message the consumer gave up on must not hold them
// for ever.
func (e *endsTaker) mayTakeAgain(seq, delivered uint64) bool {
	if seq == 0 || e.floor+1 >= seq {
		return true
	}
	if time.Duration(delivered)*endsAgainDelay > e.lease+endsAgainDelay {
		return true
	}
	if time.Since(e.floorRead) >= endsFloorEvery {
		e.floorRead = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := e.cons.Info(ctx)
		if err != nil {
			e.c.log.Warn("read the job ends consumer's ack floor", "err", err)
			return false
		}
		e.floor = max(e.floor, info.AckFloor.Stream)
	}
	return e.floor+1 >= seq
}

// archiveRetry is how long ends whose final states could not be
// archived wait before they are taken again.
const archiveRetry = 5 * time.Second
