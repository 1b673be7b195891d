package conductor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/archive"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// endsTaker takes the job ends that workerd announces a burst at a time
// (wire.Ends) from the ends stream, once for all that conductord does with
// them: the counters, the batch ends, and the waits of its Client
// (jobEnds). Being a stream with a durable consumer, the ends announced
// while conductord was away wait for it. It does not take the job events,
// one message per job, that workerd publishes for any other subscriber:
// under load they were a tenth of conductord's CPU.
//
// It is a startstop.Service: its goroutine takes the ends from Start
// until Stop, acking each once handled.
type endsTaker struct {
	*startstop.Func
	c       *Conductor
	cons    jetstream.Consumer
	backlog uint64 // the ends waiting at start
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
)

// endsMaxDeliver is how many times ends are taken before they are given
// up: with archiveRetry between, about 100 minutes of a failing archive.
const endsMaxDeliver = 1200

func newEndsTaker(ctx context.Context, c *Conductor) (*endsTaker, error) {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, c.space.EndsStream(), jetstream.ConsumerConfig{
		Durable:       subject.EndsConsumer,
		Description:   "conductord: job ends to count and archive",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 4 * endsBatch,
		// Ends the archive keeps refusing (a disk that stays full) are
		// given up after this many tries, rather than held for ever.
		MaxDeliver: endsMaxDeliver,
	})
	if err != nil {
		return nil, fmt.Errorf("conductor: create the job ends consumer: %w", err)
	}
	// The ends that waited for conductord: until they are taken, the
	// archive cannot say a state is not in it.
	info := cons.CachedInfo()
	e := &endsTaker{c: c, cons: cons, backlog: info.NumPending + uint64(info.NumAckPending)}
	e.caughtUp(0)
	e.Func = startstop.NewFunc(e.run)
	if err := e.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *endsTaker) run(ctx context.Context) {
	var it jetstream.MessagesContext
	for {
		var err error
		if it, err = e.cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(endsBatch, endsMaxBytes)); err == nil {
			break
		}
		e.c.log.Error("take the job ends; trying again in a second", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var taken uint64
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			e.c.log.Warn("take the job ends", "err", err)
			continue
		}
		ends, ok := e.c.decodeEnds(m.Subject(), m.Data())
		if ok && e.c.archive != nil {
			if err := e.c.archive.put(ends); err != nil {
				// Taken again later: the final states must be archived
				// before they leave the state bucket.
				e.c.log.Error("archive final job states; trying again in a while", "err", err)
				if err := m.NakWithDelay(archiveRetry); err != nil {
					e.c.log.Warn("put back job ends not archived; they come back when their lease ends", "err", err)
				}
				continue
			}
		}
		if ok {
			if e.c.storage != nil {
				e.c.storage.noteEnds(ends)
			}
			e.c.jobEnds(ends)
		}
		taken++
		e.caughtUp(taken)
		if err := m.Ack(); err != nil {
			e.c.log.Warn("ack job ends", "err", err)
		}
	}
}

// archiveRetry is how long ends whose final states could not be
// archived wait before they are taken again.
const archiveRetry = 5 * time.Second

// decodeEnds reads the ends of a burst of attempts; unreadable ends, and
// ends whose type is not their subject's, are logged and ignored.
func (c *Conductor) decodeEnds(subj string, data []byte) (wire.Ends, bool) {
	ends, err := wire.DecodeEnds(data)
	if err == nil && (ends.Type == "" || ends.Type != c.space.JobEndsTypeOf(subj)) {
		err = fmt.Errorf("type %q on the subject of type %q", ends.Type, c.space.JobEndsTypeOf(subj))
	}
	if err != nil {
		c.log.Warn("ignoring unreadable job ends", "subject", subj, "err", err)
		if c.onEnds != nil {
			c.onEnds(nil)
		}
		return ends, false
	}
	// An end no job could have (an id that is no job id, a state too
	// large to keep) is dropped, the rest kept: one bad end must not hold
	// up the others for ever.
	kept := ends.Jobs[:0]
	for _, e := range ends.Jobs {
		if subject.Token("job id", e.ID) != nil || len(e.State) > archive.MaxStateLen {
			c.log.Warn("ignoring a job end no job could have", "subject", subj, "job", fmt.Sprintf("%.100q", e.ID), "state_bytes", len(e.State))
			continue
		}
		kept = append(kept, e)
	}
	ends.Jobs = kept
	return ends, true
}

// jobEnds counts the ends of a burst of attempts, and passes the final
// ones to the batch watcher and the Client's waits.
func (c *Conductor) jobEnds(ends wire.Ends) {
	var ended []string // for onEnds
	if c.onEnds != nil {
		defer func() { c.onEnds(ended) }()
	}
	c.stats.superseded(ends.Type, ends.Superseded)
	for _, e := range ends.Jobs {
		c.stats.count(ends.Type, string(e.Status))
		if !e.Status.Final() {
			continue
		}
		if e.Batch != "" {
			c.batchEnds.mark(e.Batch)
		}
		c.client.JobEnded(e.ID)
		if c.onEnds != nil {
			ended = append(ended, e.ID)
		}
	}
}
