package conductor

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// endsAcksInFlight bounds the acks the ends taker's acker has waiting
// for the server's confirmation at once; endsAckWait bounds the wait for
// a whole flush's.
const (
	endsAcksInFlight = 64
	endsAckWait      = 5 * time.Second
)

// ackAll is the ends taker's acker: it acks the messages of each flush
// the taker passes on acks (their counts saved), each with the server's
// confirmation, endsAcksInFlight at a time, and drops the confirmed
// sequences from the stats; then it tells confirmed, if it can, that
// there are acked sequences to save. It returns once acks is closed and
// drained.
//
// An ack not confirmed leaves its sequence in the stats: if the ack was
// lost the ends come back and are not counted again; if it was applied
// they do not, and the consumer's ack floor drops it later (prune).
func (e *endsTaker) ackAll(acks <-chan []heldEnds, confirmed chan<- struct{}) {
	for batch := range acks {
		if e.ackBatch(batch) {
			select {
			case confirmed <- struct{}{}:
			default:
			}
		}
	}
}

// ackBatch acks batch and reports whether it dropped sequences from the
// stats. Its goroutines end before it returns.
func (e *endsTaker) ackBatch(batch []heldEnds) bool {
	ack := e.c.ackEnds
	if ack == nil {
		ack = func(ctx context.Context, m jetstream.Msg) error { return m.DoubleAck(ctx) }
	}
	var (
		wg       sync.WaitGroup
		slots    = make(chan struct{}, endsAcksInFlight)
		mu       sync.Mutex
		done     = map[string][]uint64{} // by type, the sequences confirmed
		failures int
		lastErr  error
	)
	// One deadline for the batch: a server that does not answer holds
	// the acker, and so the taker's Stop, endsAckWait at most per batch.
	bctx, bcancel := context.WithTimeout(context.Background(), endsAckWait)
	defer bcancel()
	for _, h := range batch {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			err := ack(bctx, h.m)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failures, lastErr = failures+1, err
			case h.typ != "" && h.seq != 0:
				done[h.typ] = append(done[h.typ], h.seq)
			}
		})
	}
	wg.Wait()
	if failures > 0 {
		e.c.log.Warn("ack job ends; they come back when their lease ends, and are not counted again", "failed", failures, "of", len(batch), "err", lastErr)
	}
	for typ, seqs := range done {
		e.c.stats.acked(typ, seqs)
	}
	return len(done) > 0
}
