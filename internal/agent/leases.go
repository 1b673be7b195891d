package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// leases keeps the lease of every job the source holds, from its delivery
// until it is acked, naked or put back. Its goroutine (run) tells
// JetStream, a third of a lease apart, that every held job is still being
// worked on, so that only a lost host lets a lease run out. mu guards held
// and is taken under no other lock; the extensions are sent under it, so
// that none follows the release that precedes an ack or a nak (a lease
// extended after a delayed nak would cut the retry's delay short).
type leases struct {
	typ     string
	ackWait time.Duration
	log     *slog.Logger

	mu   sync.Mutex
	held map[*nats.Msg]time.Time // when each was delivered (monotonic)
	pass time.Time               // when the leases were last extended
}

func newLeases(typ string, ackWait time.Duration, log *slog.Logger) *leases {
	return &leases{typ: typ, ackWait: ackWait, log: log, held: make(map[*nats.Msg]time.Time)}
}

// hold keeps m's lease from now on.
func (l *leases) hold(m *nats.Msg) {
	l.mu.Lock()
	l.held[m] = time.Now()
	l.mu.Unlock()
}

// fresh reports whether m's lease is surely still ours: it was delivered,
// or last extended, well within a lease ago. A host stopped (SIGSTOP) or
// starved past its lease finds its leases stale when it comes back: the
// job may be another host's now, and a nak of it would deliver it a third
// time while that host runs it.
func (l *leases) fresh(m *nats.Msg) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.held[m]
	if !ok {
		return false
	}
	if l.pass.After(at) {
		at = l.pass
	}
	return time.Since(at) < l.ackWait*9/10
}

// release stops keeping m's lease: call it before m's ack or nak.
func (l *leases) release(m *nats.Msg) {
	l.mu.Lock()
	delete(l.held, m)
	l.mu.Unlock()
}

// count is the number of jobs held.
func (l *leases) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held)
}

// run extends the leases until ctx ends.
func (l *leases) run(ctx context.Context) {
	t := time.NewTicker(l.ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		l.pass = time.Now()
		for m := range l.held {
			if err := m.InProgress(); err != nil && !errors.Is(err, nats.ErrMsgAlreadyAckd) {
				l.log.Debug("extend job lease", "pool", l.typ, "err", err)
			}
		}
		l.mu.Unlock()
	}
}
