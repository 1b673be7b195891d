package conductor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// A worker runs a job for 50 ms before its running state is stored
// (internal/agent/running.go): meanwhile the state reads queued, and a
// cancel then ends the job at once, as it does a job no worker has: the
// state stored decides (docs/api.md). The worker's run is not hidden: its
// attempt is in the history, ended and superseded, its outcome not kept.
func TestConductor_CancelInTheFirstRunningMoments(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	startAgent(t, bundle, "squares")
	cl := c.Client()
	ctx := context.Background()

	for try := range 5 {
		path := filepath.Join(t.TempDir(), fmt.Sprint("job", try))
		require.NoError(t, syscall.Mkfifo(path+".released", 0o600))
		id, err := cl.Submit(ctx, "squares", "hold:"+path)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			_, err := os.Stat(path + ".started")
			return err == nil
		}, 30*time.Second, time.Millisecond, "the worker never started the job")
		// The worker runs the job now.
		cancelled, err := cl.Cancel(ctx, id)
		require.NoError(t, err)
		release := func() {
			f, err := os.OpenFile(path+".released", os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.Write([]byte{1})
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}
		if cancelled.Status != client.StatusCancelled {
			t.Logf("try %d: the cancel came after the running write (%s); again", try, cancelled.Status)
			release()
			_, _ = cl.Wait(ctx, id)
			continue
		}
		t.Logf("Cancel returned %s %q while the worker runs the job", cancelled.Status, cancelled.Error)
		release() // the worker answers: success, within kill_timeout
		var j *client.Job
		require.Eventually(t, func() bool {
			j, err = cl.Job(ctx, id)
			require.NoError(t, err)
			for _, a := range j.History {
				if !a.EndedAt.IsZero() || a.Superseded {
					return true
				}
			}
			return j.Status == client.StatusSucceeded
		}, 20*time.Second, 20*time.Millisecond, "the worker's outcome reaches the store")
		data, _ := json.Marshal(j)
		t.Logf("final state: %s", data)
		require.Equal(t, client.StatusCancelled, j.Status)
		require.Equal(t, "cancelled while queued", j.Error)
		require.Len(t, j.History, 1)
		assert.True(t, j.History[0].Superseded, "the worker's run is recorded, its outcome not kept")
		assert.False(t, j.History[0].EndedAt.IsZero(), "and its end")
		return
	}
	t.Fatal("in 5 tries the cancel never came within the 50 ms before the running write: the test proved nothing")
}

// A host hands a job to a worker without reading its state unless its
// copy of the cancel bucket names it (internal/agent/job.go: a first
// delivery claims only then). A host that starts while the bucket holds
// many cancels loads them all before its pools take a job: a job cancelled
// while no host ran is never handed to a worker.
func TestConductor_StartingHostRunsNoCancelledJob(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	cl := c.Client()
	ctx := context.Background()
	space, err := subject.New("default")
	require.NoError(t, err)
	// Earlier cancels, within --retention.
	at, _ := json.Marshal(map[string]time.Time{"cancelled_at": time.Now().UTC()})
	const earlier = 5000
	for i := range earlier {
		_, err := bundle.js.PublishAsync("$KV."+space.CancelBucket()+"."+fmt.Sprintf("old-%d", i), at)
		require.NoError(t, err)
		if i%1000 == 999 { // within the async publishes' bound
			select {
			case <-bundle.js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("the earlier cancels were not stored")
			}
		}
	}
	id, err := cl.Submit(ctx, "squares", 7)
	require.NoError(t, err)
	j, err := cl.Cancel(ctx, id)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status)

	startAgent(t, bundle, "squares")
	require.Eventually(t, func() bool {
		pools, err := c.Pools(ctx)
		require.NoError(t, err)
		for _, p := range pools {
			if p.Type == "squares" {
				return p.Queued == 0 && p.Running == 0 && p.Held == 0 && p.Workers == 1
			}
		}
		return false
	}, 60*time.Second, 20*time.Millisecond, "the cancelled job's message is taken")
	j, err = cl.Job(ctx, id)
	require.NoError(t, err)
	data, _ := json.Marshal(j)
	t.Logf("state: %s", data)
	require.Empty(t, j.History, "a cancelled job was handed to a worker")
}
