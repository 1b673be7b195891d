package external_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// hostID is the id of the one workerd host of the client tests.
const hostID = "ext-h1"

// setupCluster starts an in-process conductor (its own embedded JetStream on
// a random port, in memory) and one host running workerd.Run with a pool of
// two squares workers (this test binary), and returns a Client connected to
// the conductor. At cleanup it stops the host, then the conductor.
func setupCluster(t *testing.T) *client.Client {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	c, err := conductor.New(conductor.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", MemoryStorage: true,
		Logger: logger.With("who", "conductor"),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)

	self, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan error, 1)
	go func() {
		returned <- workerd.Run(ctx, workerd.Config{
			NATSURL: c.NATSURL(),
			HostID:  hostID,
			Pools:   []broker.Spec{{Name: "squares", Count: 2, Cmd: []string{self}, Env: workerEnv("squares")}},
			Logger:  logger.With("who", "workerd"),
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-returned:
			require.NoError(t, err)
		case <-time.After(time.Minute):
			t.Error("workerd.Run did not return within a minute of its cancel")
		}
	})

	cl, err := client.Connect(c.NATSURL(), client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

func TestClient_SubmitAndWait(t *testing.T) {
	t.Parallel()
	cl := setupCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	job, err := cl.SubmitAndWait(ctx, "squares", 7)
	require.NoError(t, err)
	require.NotEmpty(t, job.ID)
	require.Equal(t, "squares", job.Type)
	require.Equal(t, client.StatusSucceeded, job.Status)
	require.True(t, job.Status.Final())
	require.JSONEq(t, "49", string(job.Result))
	require.Empty(t, job.Error)
	require.Equal(t, 1, job.Attempts)
	require.Len(t, job.History, 1)
	a := job.History[0]
	require.Equal(t, 1, a.Attempt)
	require.Equal(t, hostID, a.Host)
	require.Positive(t, a.PID)
	require.Empty(t, a.Error)
	require.False(t, a.Crashed || a.OOMKilled)
	require.False(t, a.EndedAt.Before(a.StartedAt))
	require.False(t, job.CreatedAt.IsZero())

	again, err := cl.Job(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, job.Status, again.Status)
	require.Equal(t, hostID, again.History[0].Host)
}

func TestClient_PermanentErrorMakesJobDead(t *testing.T) {
	t.Parallel()
	cl := setupCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	id, err := cl.Submit(ctx, "squares", -3, client.WithMaxAttempts(5))
	require.NoError(t, err)
	job, err := cl.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, id, job.ID)
	require.Equal(t, client.StatusDead, job.Status)
	require.Equal(t, 1, job.Attempts, "a permanent error is not retried")
	require.Contains(t, job.Error, "negative")
	require.Empty(t, job.Result)
	require.JSONEq(t, "-3", string(job.Payload), "a dead job keeps its payload")
	require.Len(t, job.History, 1)
	require.Equal(t, hostID, job.History[0].Host)
	require.Contains(t, job.History[0].Error, "negative")

	dead, err := cl.DeadJobs(ctx, "squares", 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, id, dead[0].ID)
}
