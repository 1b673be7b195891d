package integration

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// Reproductions of product bugs the chaos run found. Each is skipped
// unless CHAOS_KNOWN_BUGS=1, so that make test stays green until the bug is
// fixed; then the skip goes.

// skipKnownBug skips the test, naming the bug, unless CHAOS_KNOWN_BUGS=1.
func skipKnownBug(t *testing.T, bug string) {
	if os.Getenv("CHAOS_KNOWN_BUGS") != "1" {
		t.Skip("known bug: " + bug + " (CHAOS_KNOWN_BUGS=1 runs it)")
	}
}

// A read of a job's state (Client.Job, and so Client.Wait) in flight when
// conductord dies never returns before the caller's context ends: the
// Client reads under the caller's context alone, the request is lost with
// the server, and nats.go does not fail a request in flight on a
// reconnect. A Wait with a long context therefore hangs however soon the
// job's state is there to read again: its recheck every RecheckInterval
// cannot run while its read blocks. Found by TestChaos_NothingLost
// (CHAOS=long): a wait hung for minutes after a conductord kill. Expected:
// each read is bounded (and made again) within the Client, as its writes
// are.
func TestClient_ReadInFlightAtConductordKill(t *testing.T) {
	skipKnownBug(t, "a Client read (Job, Wait) in flight when conductord dies hangs until its context ends")
	c := newCluster(t)
	c.workerd("host-a", squares(1))
	c.waitWorkers("squares", 1)
	cl, err := client.Connect(c.natsURL(), client.Config{}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j, err := cl.SubmitAndWait(ctx, "squares", 3)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)

	// Readers read the ended job's state over and over, as waits do,
	// while conductord is killed and started again on its data: a read in
	// flight at the kill is lost with it.
	const readers = 32
	var returned [readers]atomic.Int64 // when each reader's last read returned, in ns since the Unix epoch
	rctx, rcancel := context.WithTimeout(ctx, 90*time.Second)
	defer rcancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer rcancel()
	for r := range readers {
		wg.Go(func() {
			for rctx.Err() == nil {
				_, _ = cl.Job(rctx, j.ID)
				returned[r].Store(time.Now().UnixNano())
			}
		})
	}
	require.Eventually(t, func() bool {
		for r := range readers {
			if returned[r].Load() == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "every reader reads")
	require.NoError(t, c.conductor.cmd.Process.Kill())
	<-c.conductor.exited
	c.startConductor()
	restarted := time.Now()

	// The job's state is there to read again: each reader should get an
	// answer (or an error) within seconds of the restart.
	var stuck []int
	ok := assert.Eventually(t, func() bool {
		stuck = stuck[:0]
		for r := range readers {
			if returned[r].Load() < restarted.UnixNano() {
				stuck = append(stuck, r)
			}
		}
		return len(stuck) == 0
	}, 20*time.Second, 50*time.Millisecond)
	if !ok {
		t.Fatalf("%d of %d reads of an ended job's state begun before conductord's kill have not returned 20s after its restart (they hang until their context ends)", len(stuck), readers)
	}
}
