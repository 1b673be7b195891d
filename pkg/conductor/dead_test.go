package conductor_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestConductor_DeadJobs lets a job die on a real workerd agent, lists it,
// re-queues it, and sees it run (and die) again with its history kept.
func TestConductor_DeadJobs(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	startAgent(t, bundle, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()

	dead, err := cl.SubmitAndWait(ctx, "squares", "fail")
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, dead.Status)
	var once client.Job // a job of its own attempt limit: one crash, then dead
	code, body := post(t, srv, "/v1/jobs/squares?wait=20s&max_attempts=1", `"crash-once"`)
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, json.Unmarshal([]byte(body), &once))
	require.Equal(t, client.StatusDead, once.Status)
	require.Contains(t, once.Error, "worker exited: exit status 3")
	require.True(t, once.History[0].Crashed)
	code, _ = post(t, srv, "/v1/jobs/squares?max_attempts=0", `1`)
	require.Equal(t, http.StatusBadRequest, code)
	ok, err := cl.SubmitAndWait(ctx, "squares", 3)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, ok.Status)

	var list []client.Job
	require.Eventually(t, func() bool {
		list = nil
		code, body := get(t, srv, "/v1/jobs?status=dead&type=squares")
		require.Equal(t, http.StatusOK, code, body)
		require.NoError(t, json.Unmarshal([]byte(body), &list))
		return len(list) == 2
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, once.ID, list[0].ID, "newest first")
	list = list[1:]
	require.Equal(t, dead.ID, list[0].ID)
	require.JSONEq(t, `"fail"`, string(list[0].Payload))
	require.Equal(t, "asked to fail", list[0].Error)
	others, err := cl.DeadJobs(ctx, "other", 0)
	require.NoError(t, err)
	require.Empty(t, others)

	code, body = post(t, srv, "/v1/jobs/"+ok.ID+"/retry", "")
	require.Equal(t, http.StatusConflict, code, body)
	require.Contains(t, body, "is not dead: "+ok.ID+" is succeeded")
	code, _ = post(t, srv, "/v1/jobs/nope/retry", "")
	require.Equal(t, http.StatusNotFound, code)

	code, body = post(t, srv, "/v1/jobs/"+dead.ID+"/retry", "")
	require.Equal(t, http.StatusOK, code, body)
	var queued client.Job
	require.NoError(t, json.Unmarshal([]byte(body), &queued))
	require.Equal(t, client.StatusQueued, queued.Status)
	require.Len(t, queued.History, 1)

	again, err := cl.Wait(ctx, dead.ID)
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, again.Status, "it ran again, and failed again")
	require.Len(t, again.History, 2, "the first run's history is kept")
	require.Eventually(t, func() bool {
		list, err := cl.DeadJobs(ctx, "", 0)
		require.NoError(t, err)
		return len(list) == 2 && list[0].ID == dead.ID && list[0].UpdatedAt.After(dead.UpdatedAt)
	}, 10*time.Second, 10*time.Millisecond, "listed again once dead again")

	for _, path := range []string{"/v1/jobs?status=nope", "/v1/jobs?status=dead&limit=0", "/v1/jobs?status=dead&type=a.b"} {
		code, _ := get(t, srv, path)
		require.Equal(t, http.StatusBadRequest, code, path)
	}
}

// TestConductor_Cancel cancels a job while it runs on a real workerd agent
// (its worker honours the cancel op), and one queued for a type that no
// worker serves yet: it is cancelled the moment a worker would take it.
func TestConductor_Cancel(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()

	queued, err := cl.Submit(ctx, "later", 2)
	require.NoError(t, err)
	waited := make(chan *client.Job, 1)
	go func() {
		j, err := cl.Wait(ctx, queued)
		assert.NoError(t, err)
		waited <- j
	}()
	code, body := post(t, srv, "/v1/jobs/"+queued+"/cancel", "")
	require.Equal(t, http.StatusAccepted, code, body)
	require.Contains(t, body, `"status":"cancelled"`, "a job no worker runs is cancelled at once")

	// Every view reads it cancelled, before any worker exists.
	j, err := cl.Job(ctx, queued)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status)
	require.Equal(t, "cancelled while queued", j.Error)
	require.Equal(t, client.StatusCancelled, (<-waited).Status, "its waiters wake")
	code, body = get(t, srv, "/v1/jobs?status=queued")
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, queued)
	code, body = get(t, srv, "/v1/jobs?status=cancelled")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, queued)

	// A worker comes: the job's message is acked, the job never handed to it.
	startAgent(t, bundle, "squares", "later")
	require.Eventually(t, func() bool {
		pools, err := c.Pools(ctx)
		require.NoError(t, err)
		for _, p := range pools {
			if p.Type == "later" {
				return p.Queued == 0 && p.Running == 0 && p.Workers == 1
			}
		}
		return false
	}, 20*time.Second, 20*time.Millisecond, "the cancelled job's message is taken and acked")
	j, err = cl.Job(ctx, queued)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status)
	require.Zero(t, j.Attempts, "no worker ran it")
	require.Empty(t, j.History)

	running, err := cl.Submit(ctx, "squares", "block")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		j, err := cl.Job(ctx, running)
		return err == nil && j.Status == client.StatusRunning
	}, 10*time.Second, 10*time.Millisecond)
	_, err = cl.Cancel(ctx, running)
	require.NoError(t, err)
	j, err = cl.Wait(ctx, running)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status)
	require.Contains(t, j.Error, "cancelled by workerd")

	_, err = cl.Cancel(ctx, running)
	require.ErrorIs(t, err, client.ErrJobEnded)
	code, _ = post(t, srv, "/v1/jobs/"+running+"/cancel", "")
	require.Equal(t, http.StatusConflict, code)
	code, _ = post(t, srv, "/v1/jobs/nope/cancel", "")
	require.Equal(t, http.StatusNotFound, code)
}

// TestRequeue_WaitsForTheDeadIndex: a job whose dead state is stored but
// not yet indexed (its host indexes it just after) is re-queued once the
// index has it, not refused: a caller told "dead" may retry at once.
func TestRequeue_WaitsForTheDeadIndex(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := "0193aaaa-0000-7000-8000-000000000001"
	dead, _ := json.Marshal(client.Job{ID: id, Type: "later", Status: client.StatusDead, Payload: json.RawMessage(`7`),
		Attempts: 1, Error: "boom", CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()})
	states, err := bundle.js.KeyValue(ctx, "conductor-default-state")
	require.NoError(t, err)
	_, err = states.Put(ctx, id, dead)
	require.NoError(t, err)
	index, err := bundle.js.KeyValue(ctx, "conductor-default-dead")
	require.NoError(t, err)
	indexStream, err := bundle.js.Stream(ctx, "KV_conductor-default-dead")
	require.NoError(t, err)

	type result struct {
		job *client.Job
		err error
	}
	done := make(chan result, 1)
	go func() {
		j, err := c.Client().Requeue(ctx, id)
		done <- result{j, err}
	}()
	// Requeue watches the index for the job: then the host indexes it.
	require.Eventually(t, func() bool {
		info, err := indexStream.Info(ctx)
		return err == nil && info.State.Consumers > 0
	}, 10*time.Second, 5*time.Millisecond, "Requeue waits on the index")
	_, err = index.Put(ctx, id, dead)
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, client.StatusQueued, r.job.Status)

	// One never indexed is refused, after the wait, saying why.
	other := "0193aaaa-0000-7000-8000-000000000002"
	dead2, _ := json.Marshal(client.Job{ID: other, Type: "later", Status: client.StatusDead, Payload: json.RawMessage(`7`)})
	_, err = states.Put(ctx, other, dead2)
	require.NoError(t, err)
	_, err = c.Client().Requeue(ctx, other)
	require.ErrorContains(t, err, "is not in the dead job index: not indexed within 2s")
}
