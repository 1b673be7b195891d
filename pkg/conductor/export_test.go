package conductor

import (
	"context"
	"time"
)

// StrayPass is what one pass of the stray repair found and did.
type StrayPass struct{ Found, Deleted, Requeued, Skipped int }

// OnStrayPass sets fn to be told of each pass of c's stray repair (a test
// signal); call it between New and Start.
func OnStrayPass(c *Conductor, fn func(StrayPass)) {
	c.onStrayPass = func(p strayPass) {
		fn(StrayPass{Found: p.found, Deleted: p.deleted, Requeued: p.requeued, Skipped: p.skipped})
	}
}

// OnConsumerPass sets fn to be told of each pass of c's consumer sweep,
// with the types whose consumers it removed (a test signal); call it
// between New and Start.
func OnConsumerPass(c *Conductor, fn func(removed []string)) { c.onConsumerPass = fn }

// SweepPayloads runs one sweep of c's payload bucket now, as its leader
// does every ten minutes, of the objects stored before before, and
// returns how many it removed.
func SweepPayloads(c *Conductor, before time.Time) int {
	return c.reaper.sweep(context.Background(), before)
}

// OnEventsCut sets fn to be told when c cuts off an event stream whose
// client does not read it, with the reason ("overflow" or "write
// timeout") and the bytes queued for it (a test signal); call it between
// New and Start, or before any stream opens.
func OnEventsCut(c *Conductor, fn func(reason string, buffered int)) { c.onEventsCut = fn }

// PendingHostAnswers is the number of response mappings the default
// namespace's account holds for requests through host accounts' imports.
func PendingHostAnswers(c *Conductor) int {
	srv := c.access.server()
	if srv == nil {
		return 0
	}
	return srv.GlobalAccount().NumPendingAllResponses()
}

// Reconnects is how many times c's own NATS connection has reconnected
// (a test signal).
func Reconnects(c *Conductor) uint64 { return c.nc.Stats().Reconnects }

// BatchesHeld is how many batches c's batch watcher holds.
func BatchesHeld(c *Conductor) int {
	c.batchEnds.mu.Lock()
	defer c.batchEnds.mu.Unlock()
	return len(c.batchEnds.batches)
}

// StoreInBytes is how many bytes the connection of c's store (hostsvc's
// own) has received.
func StoreInBytes(c *Conductor) uint64 { return c.storeNC.Stats().InBytes }

// Succeeded is the count of typ's jobs c has counted succeeded.
func Succeeded(c *Conductor, typ string) uint64 { return c.stats.snapshot()[typ].Succeeded }
