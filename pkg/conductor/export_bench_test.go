package conductor

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// ConsoleSampler returns a function that takes one sample of c's console
// as the sampler does (consoleSample: read the pools and the live hosts,
// make the snapshot, encode it and keep it in the history), on a hub of
// its own so that a benchmark may call it beside c's own sampler; it
// returns the bytes of the frame it made. Not safe for concurrent calls.
func ConsoleSampler(c *Conductor) func(ctx context.Context, now time.Time) int {
	h := newConsoleHub()
	return func(ctx context.Context, now time.Time) int {
		ctx, cancel := context.WithTimeout(ctx, consoleReadTimeout)
		defer cancel()
		pools, err := c.Pools(ctx)
		h.add(h.snapshot(c.liveHosts(), pools, err, now))
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.last)
	}
}

// NATSConn is c's own connection to its NATS server, on which it asks the
// hosts for their log tails.
func NATSConn(c *Conductor) *nats.Conn { return c.nc }
