package conductor

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A known gap (docs/messages.md, "Abort"), found by an outside review:
// RunBatch tags its jobs with a batch id but writes no batch record, so
// AbortBatch does not find it; a RunBatch is stopped by its ctx. This
// test pins the gap.
func TestKnownGap_RunBatchIsNotAbortable(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", MemoryStorage: true})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := RunBatch(ctx, BatchConfig{Client: c.Client(), Type: "squares", Jobs: func(submit func(any) error) error {
		for i := range 3 {
			if err := submit(map[string]int{"n": i}); err != nil {
				return err
			}
		}
		return nil
	}})
	require.Error(t, err, "no worker: the batch does not end")
	require.Equal(t, 3, res.Total)
	_, err = c.Client().AbortBatch(context.Background(), res.ID)
	require.ErrorIs(t, err, ErrBatchNotFound, "the gap is closed: make this a test that RunBatch's batch aborts")
}
