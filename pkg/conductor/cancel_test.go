package conductor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// A host fetches the oldest queued jobs first, so the jobs it holds are the
// oldest queued ones, past the newest that a listing's pass keeps: GET
// /v1/jobs?status=held reads them by id.
func TestConductor_HeldListWithBacklog(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	ctx := context.Background()

	var ids []string
	for i := range 30 {
		id, err := c.Client().Submit(ctx, "hold", i)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	space, err := subject.New("default")
	require.NoError(t, err)
	cons, err := bundle.js.CreateOrUpdateConsumer(ctx, space.JobStream(), jetstream.ConsumerConfig{
		Durable: space.Consumer("hold"), FilterSubject: space.JobAt("hold", ""), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	batch, err := cons.FetchNoWait(2)
	require.NoError(t, err)
	var delivered []string
	for m := range batch.Messages() {
		delivered = append(delivered, m.Headers().Get("Conductor-Job-Id"))
	}
	require.Equal(t, ids[:2], delivered, "the oldest jobs are delivered first")
	heldID := delivered[1]

	hbCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	hb, err := json.Marshal(wire.Heartbeat{
		Host: "hx", Interval: wire.Duration(100 * time.Millisecond),
		Pools: []wire.PoolInfo{{Name: "hold", Count: 1, Protocol: "channel", State: "running", Held: 1, HeldJobs: []string{heldID}}},
	})
	require.NoError(t, err)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = bundle.nc.Publish(space.Host("hx"), hb)
			select {
			case <-hbCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	require.Eventually(t, func() bool {
		code, body := get(t, srv, "/v1/jobs/"+heldID)
		return code == http.StatusOK && json.Unmarshal([]byte(body), new(client.Job)) == nil && strings.Contains(body, `"held"`)
	}, 10*time.Second, 20*time.Millisecond, "the job reads held on its own")

	code, body := get(t, srv, "/v1/jobs?status=held&limit=5")
	require.Equal(t, http.StatusOK, code, body)
	var jobs []client.Job
	require.NoError(t, json.Unmarshal([]byte(body), &jobs))
	var got []string
	for _, j := range jobs {
		got = append(got, string(j.Status)+":"+j.ID)
	}
	require.Equal(t, []string{"held:" + heldID}, got, "the one held job is listed (30 queued, limit 5)")
}

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
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(path + ".started"); err == nil {
				break
			}
			require.True(t, time.Now().Before(deadline), "the worker never started the job")
			runtime.Gosched()
		}
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
	t.Skip("the cancel never came within the running window")
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
	}
	select {
	case <-bundle.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("the earlier cancels were not stored")
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
