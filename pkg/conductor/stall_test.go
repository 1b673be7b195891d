package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// A batch whose submitter stopped part way (a crash between its jobs) is
// cut by conductord to the jobs queued once it has been still for the
// stall time, so that it ends; one with no job queued goes.
func TestBatchEnds_StalledSubmissionIsCut(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", MemoryStorage: true})
	require.NoError(t, err)
	c.batchStall = 300 * time.Millisecond
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	ctx := context.Background()
	batches, err := c.js.KeyValue(ctx, c.space.BatchBucket())
	require.NoError(t, err)
	states, err := c.js.KeyValue(ctx, c.space.StateBucket())
	require.NoError(t, err)

	record := func(id string, total int) {
		rec, _ := json.Marshal(&client.Batch{ID: id, Type: "sq", Total: total, CreatedAt: time.Now().UTC(), Submitting: true})
		_, err := batches.Create(ctx, id, rec)
		require.NoError(t, err)
		c.batchEnds.check(id) // as a job's end would
	}
	record("cut", 10)
	for i := range 3 {
		st, _ := json.Marshal(&client.Job{ID: "cut-" + strconv.Itoa(i), Type: "sq", Status: client.StatusSucceeded})
		_, err := states.Create(ctx, "cut-"+strconv.Itoa(i), st)
		require.NoError(t, err)
	}
	record("empty", 5)

	require.Eventually(t, func() bool {
		b, err := c.client.Batch(ctx, "cut")
		return err == nil && !b.Submitting && b.Total == 3 && b.Ended()
	}, 15*time.Second, 20*time.Millisecond, "cut to the 3 jobs queued, and ended")
	require.Eventually(t, func() bool {
		_, err := c.client.Batch(ctx, "empty")
		return errors.Is(err, client.ErrBatchNotFound)
	}, 15*time.Second, 20*time.Millisecond, "no job queued: the batch goes")
}
