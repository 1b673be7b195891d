package agent

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// replays tells which job messages may be delivered again as if for the
// first time. A server that restarts from a kill can lose its consumers'
// recent state (it is written to disk on a timer, docs/reliability.md,
// "Delivery"): a message delivered, and perhaps run, before the kill then
// comes again with a delivery count of 1. Its first-delivery path would
// run it without reading its state, telling the worker attempt 1 and not
// redelivered. So once the agent finds itself connected to a server it
// was not connected to before (a new server id: a restart, or another
// server of a cluster), every message stored before that moment is a
// possible replay, and claims its state first (states.claim), as a
// redelivery does: a read and a write before it runs. Messages stored
// after it take the fast path again.
//
// The agent's watchReconnects goroutine drives it; the sources read it.
type replays struct {
	all   atomic.Bool            // every message is suspect: the stream's last sequence is not known yet
	below atomic.Uint64          // messages at or below this stream sequence are suspect
	id    atomic.Pointer[string] // the server last connected to, as watchReconnects saw it
}

// suspect reports whether the message at stream sequence seq may have been
// delivered before a server restart: one stored before the agent learnt of
// the restart, or any while the agent is connected to a server that
// watchReconnects has not seen yet (serverID, the connection's now).
func (r *replays) suspect(seq uint64, serverID string) bool {
	if r == nil {
		return false
	}
	if r.all.Load() || seq != 0 && seq <= r.below.Load() {
		return true
	}
	known := r.id.Load()
	return known != nil && serverID != "" && serverID != *known
}

// connected records the server connected to now: serverID ("" if the
// connection dropped again already: ignored). It reports whether it is a
// new one after another, in which case every message is suspect until
// learn is done.
func (r *replays) connected(serverID string) bool {
	if serverID == "" {
		return false
	}
	prev := r.id.Swap(&serverID)
	if prev == nil || *prev == serverID {
		return false
	}
	r.all.Store(true)
	return true
}

// learn reads the job stream's last sequence, trying again until it can
// or ctx ends, and makes the messages up to it the suspect ones.
func (r *replays) learn(ctx context.Context, js jetstream.JetStream, stream string) {
	delay := 100 * time.Millisecond
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.Stream(sctx, stream)
		cancel()
		if err == nil {
			// Not the most seen: a server that lost its store (memory
			// storage) numbers its messages from 1 again.
			r.below.Store(s.CachedInfo().State.LastSeq)
			r.all.Store(false)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
