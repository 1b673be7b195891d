package hostsvc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// Review 19e: the consumers of a type are shared by every host of it, and
// made by whoever comes first: hosts starting (MakeConsumers, or
// MakeAllConsumers for a host from before priorities as they come) and
// conductord's leader (MakePriority), each through a request of its own,
// at the same time. Whatever the interleaving, every consumer of the type
// must lease for at least the longest ack wait any host asked: a host
// extends its leases every third of its own ack wait, so a consumer
// leasing for less delivers its running jobs again to another worker.

// TestAttack19e_ConcurrentMakersKeepTheLongestAckWait: hosts of one type
// start together with different ack waits (some old, asking for all three
// consumers, some new, asking lazily) while the leader makes the high and
// low consumers, their jobs being queued. At the end, the normal consumer
// leases for the longest wait asked, and the high and low ones for no less.
func TestAttack19e_ConcurrentMakersKeepTheLongestAckWait(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	waits := []time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute, 45 * time.Second}
	const rounds = 30
	var bad []string
	for r := range rounds {
		typ := fmt.Sprintf("t%d", r)
		for _, p := range []string{"high", "low"} {
			_, err := b.js.Publish(ctx, b.sp.JobAt(typ, p), []byte("1"))
			require.NoError(t, err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i, w := range waits {
			make := MakeConsumers
			if i%2 == 1 {
				make = MakeAllConsumers
			}
			wg.Go(func() { errs <- make(ctx, b.js, b.sp, typ, w) })
		}
		for range 2 {
			for _, p := range []wire.Priority{wire.PriorityHigh, wire.PriorityLow} {
				wg.Go(func() {
					_, err := MakePriority(ctx, b.js, b.sp, typ, p)
					errs <- err
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		ackWait := func(p wire.Priority) time.Duration {
			c, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.ConsumerAt(typ, string(p)))
			require.NoError(t, err, "%s %s", typ, p)
			return c.CachedInfo().Config.AckWait
		}
		normal := ackWait(wire.PriorityNormal)
		if normal != 10*time.Minute {
			bad = append(bad, fmt.Sprintf("%s: normal leases for %s, not the 10m asked", typ, normal))
		}
		for _, p := range []wire.Priority{wire.PriorityHigh, wire.PriorityLow} {
			if w := ackWait(p); w < 10*time.Minute {
				bad = append(bad, fmt.Sprintf("%s: %s leases for %s, not the 10m asked", typ, p, w))
			}
		}
	}
	require.Empty(t, bad, "of %d types made concurrently", rounds)
}

// TestAttack19e_ConcurrentHostsKeepTheLongestAckWait is the same race
// without the leader and without high or low jobs: hosts of one type,
// all asking lazily, start together with different ack waits. Each reads
// the normal consumer, then writes its own wait raised to what it read:
// a read made before another's raise writes the lower wait back.
func TestAttack19e_ConcurrentHostsKeepTheLongestAckWait(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	waits := []time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute, 45 * time.Second}
	const rounds = 30
	var bad []string
	for r := range rounds {
		typ := fmt.Sprintf("u%d", r)
		var wg sync.WaitGroup
		errs := make(chan error, len(waits))
		for _, w := range waits {
			wg.Go(func() { errs <- MakeConsumers(ctx, b.js, b.sp, typ, w) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		c, err := b.js.Consumer(ctx, b.sp.JobStream(), b.sp.Consumer(typ))
		require.NoError(t, err)
		if w := c.CachedInfo().Config.AckWait; w != 10*time.Minute {
			bad = append(bad, fmt.Sprintf("%s: normal leases for %s", typ, w))
		}
	}
	require.Empty(t, bad, "of %d types made concurrently, the 10m asked by one host", rounds)
}
