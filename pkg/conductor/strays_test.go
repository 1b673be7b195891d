package conductor_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// startTellingStrays starts a Conductor on dir, logging into logs, that
// tells each pass of its stray repair on the channel returned.
func startTellingStrays(t *testing.T, ctx context.Context, dir string, logs io.Writer) (*conductor.Conductor, <-chan conductor.StrayPass) {
	t.Helper()
	c, err := conductor.New(conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	require.NoError(t, err)
	passes := make(chan conductor.StrayPass, 16)
	conductor.OnStrayPass(c, func(p conductor.StrayPass) {
		select {
		case passes <- p:
		default:
		}
	})
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	return c, passes
}

// runHost runs a workerd agent against c with one worker (this test
// binary) per pool, on a connection of its own; it stops at cleanup, or
// before with Stop.
func runHost(t *testing.T, c *conductor.Conductor, pools ...string) *agent.Agent {
	t.Helper()
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	self, err := os.Executable()
	require.NoError(t, err)
	var specs []broker.Spec
	for _, name := range pools {
		specs = append(specs, broker.Spec{Name: name, Count: 1, Cmd: []string{self}})
	}
	a, err := agent.New(agent.Config{Conn: nc, Host: "h1", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Pools: specs})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
	return a
}

// TestConductor_RepairsStrayMessages builds on disk what a kill of the
// server under load can leave (docs/reliability.md, "Delivery"): the job
// stream holds messages again that the consumer acked, its ack floor past
// them. 20 jobs run to their end; then the stream's block files are put
// back as they were before the jobs ran (the removals forgotten, as when
// the server drops their tombstones and recovers from a crash), while the
// consumer keeps its state. One job's state is made to say it has not
// ended. At its next start the conductor removes the 19 leftovers of
// jobs that ended and queues the 20th again, claiming its state first; it
// runs to its end, and no other state changes.
func TestConductor_RepairsStrayMessages(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	space, err := subject.New("default")
	require.NoError(t, err)
	msgs := filepath.Join(dir, "jetstream", "$G", "streams", space.JobStream(), "msgs")

	c, _ := startTellingStrays(t, ctx, dir, t.Output())
	js := jetStream(t, c)
	const n, open = 20, 7
	ids := make([]string, n)
	for i := range n {
		ids[i], err = c.Client().Submit(ctx, "squares", i)
		require.NoError(t, err)
	}
	stream, err := js.Stream(ctx, space.JobStream())
	require.NoError(t, err)
	m, err := stream.GetMsg(ctx, open+1)
	require.NoError(t, err)
	require.Equal(t, ids[open], m.Header.Get(names.HeaderJobID), "jobs are queued in order")
	// The stream's files with the 20 jobs in them: in place on disk once
	// each publish is acknowledged.
	before := t.TempDir()
	require.NoError(t, os.CopyFS(before, os.DirFS(msgs)))

	host := runHost(t, c, "squares")
	for i, id := range ids {
		j, err := c.Client().Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status)
		require.JSONEq(t, strconv.Itoa(i*i), string(j.Result))
	}
	host.Stop()

	// Job open's state says an attempt of its own message runs it, one
	// that never reported: a job that has not ended.
	kv, err := js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	e, err := kv.Get(ctx, ids[open])
	require.NoError(t, err)
	var st wire.Job
	require.NoError(t, json.Unmarshal(e.Value(), &st))
	st.Status, st.Result = wire.StatusRunning, nil
	st.History = []wire.Attempt{{Attempt: 1, Host: "gone", StartedAt: time.Now().UTC()}}
	st.Holder = wire.ClaimOver(e.Revision(), open+1, "gone").String()
	data, err := json.Marshal(&st)
	require.NoError(t, err)
	_, err = kv.Update(ctx, ids[open], data, e.Revision())
	require.NoError(t, err)
	c.Stop()

	// The removals forgotten: the block files as they were, no index.
	old, err := filepath.Glob(filepath.Join(msgs, "*"))
	require.NoError(t, err)
	for _, f := range old {
		require.NoError(t, os.Remove(f))
	}
	blocks, err := filepath.Glob(filepath.Join(before, "*.blk"))
	require.NoError(t, err)
	require.NotEmpty(t, blocks)
	for _, b := range blocks {
		raw, err := os.ReadFile(b)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(msgs, filepath.Base(b)), raw, 0o600))
	}

	var logs syncBuffer
	c, passes := startTellingStrays(t, ctx, dir, io.MultiWriter(&logs, t.Output()))
	var p conductor.StrayPass
	select {
	case p = <-passes:
	case <-ctx.Done():
		t.Fatal("no pass of the stray repair")
	}
	require.Equal(t, conductor.StrayPass{Found: n, Deleted: n - 1, Requeued: 1}, p)
	require.Equal(t, conductor.StrayCounts{Deleted: n - 1, Requeued: 1}, c.Strays())
	require.Equal(t, 1, strings.Count(logs.String(), `msg="stray job messages repaired`), logs.String())
	stream, err = jetStream(t, c).Stream(ctx, space.JobStream())
	require.NoError(t, err)
	for s := uint64(1); s <= n; s++ {
		_, err := stream.GetMsg(ctx, s)
		require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "stray %d left", s)
	}

	// The job that had not ended runs again, to its end, its lost
	// attempt kept in its history; the others keep their states.
	runHost(t, c, "squares")
	j, err := c.Client().Wait(ctx, ids[open])
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, "49", string(j.Result))
	require.Len(t, j.History, 2)
	require.Equal(t, "gone", j.History[0].Host)
	require.True(t, j.History[0].Lost)
	for i, id := range ids {
		if i == open {
			continue
		}
		j, err := c.Client().Job(ctx, id)
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status)
		require.Equal(t, 1, j.Attempts)
		require.Len(t, j.History, 1)
	}
}

// jetStream is a JetStream context on a connection of its own to c,
// closed at cleanup.
func jetStream(t *testing.T, c *conductor.Conductor) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}
