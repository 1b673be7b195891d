package conductor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// Faults and hostile input against what the archive and fencing promise
// (docs/reliability.md), found by a review from outside.

// A dead job stays in the state bucket past ArchiveAfter, so that it can
// be queued again as long as the dead list shows it.
func TestConductor_DeadJobRequeuedAfterArchiveAfter(t *testing.T) {
	t.Parallel()
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", ArchiveAfter: time.Second})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	bundle := &testBundle{nc: conn(t, c)}
	bundle.js, err = jetstream.New(bundle.nc)
	require.NoError(t, err)
	startAgent(t, bundle, "squares")
	ctx := context.Background()
	id, err := c.Client().Submit(ctx, "squares", "fail")
	require.NoError(t, err)
	j, err := c.Client().Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, j.Status)
	// A succeeded job submitted after it has left the bucket: so has
	// anything that would.
	done, err := c.Client().SubmitAndWait(ctx, "squares", 3)
	require.NoError(t, err)
	space, _ := subject.New("default")
	kv, err := bundle.js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := kv.Get(ctx, done.ID)
		return err != nil
	}, 15*time.Second, 50*time.Millisecond)
	_, err = kv.Get(ctx, id)
	require.NoError(t, err, "the dead state is still in the bucket")
	queued, err := c.Client().Requeue(ctx, id)
	require.NoError(t, err, "a dead job listed dead can be queued again")
	require.Equal(t, client.StatusQueued, queued.Status)
}

// Job ends no job could have (an id longer than any job id) are dropped,
// not retried for ever holding up the others.
func TestConductor_UnstorableEndsAreDropped(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	space, _ := subject.New("default")
	long := strings.Repeat("x", 300)
	_, err := bundle.js.Publish(ctx, space.JobEnds("squares"), []byte(`{"type":"squares","jobs":[{"id":"`+long+`","status":"succeeded","state":{"id":"x"}}]}`))
	require.NoError(t, err)
	s, err := bundle.js.Stream(ctx, space.EndsStream())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 15*time.Second, 20*time.Millisecond, "taken and acked")
	_ = c
}

// A copy of a running job's message, published straight to the stream
// with the job's id and a state revision of its choosing, never replaces
// the running attempt's outcome: its first delivery's write ranks lowest
// (a revision the state never had), and its redeliveries wait for the job
// to end.
func TestConductor_CopyOfARunningJobDoesNotWin(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	startAgentN(t, bundle, 2, "squares")
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "job")
	require.NoError(t, syscall.Mkfifo(path+".released", 0o600))
	id, err := c.Client().Submit(ctx, "squares", "hold:"+path)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := os.Stat(path + ".started")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	space, _ := subject.New("default")
	m := nats.NewMsg(space.JobAt("squares", ""))
	m.Header.Set(names.HeaderJobID, id)
	m.Header.Set(names.HeaderStateRev, "1000000000")
	m.Data = []byte("5")
	_, err = bundle.js.PublishMsg(ctx, m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		pools, err := c.Pools(ctx)
		return err == nil && len(pools) == 1 && pools[0].Superseded == 1
	}, 10*time.Second, 20*time.Millisecond, "the copy ran, and its outcome was not kept")
	j, err := c.Client().Job(ctx, id)
	require.NoError(t, err)
	require.False(t, j.Status.Final(), "the real attempt still runs: %s", j.Status)
	require.Empty(t, j.Result)

	f, err := os.OpenFile(path+".released", os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{1})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	j, err = c.Client().Wait(ctx, id)
	require.NoError(t, err)
	require.JSONEq(t, `"released"`, string(j.Result), "the real attempt's outcome is what the store keeps")
}
