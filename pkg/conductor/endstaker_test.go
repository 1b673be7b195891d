package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// endsBundle is what the ends taker's tests use around a Conductor.
type endsBundle struct {
	c   *Conductor
	dir string
	nc  *nats.Conn
}

// setupEnds starts a Conductor on dir (a new one if ""), with ackEnds as
// its ends taker's ack, and connects to it.
func setupEnds(t *testing.T, dir string, ackEnds func(context.Context, jetstream.Msg) error) *endsBundle {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	c, err := New(Config{DataDir: dir, NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	c.ackEnds = ackEnds
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return &endsBundle{c: c, dir: dir, nc: nc}
}

// publishEnds announces n ends messages of type squares, each of two
// succeeded jobs and a failed attempt, as workerd does.
func (b *endsBundle) publishEnds(t *testing.T, n int) {
	t.Helper()
	js, err := jetstream.New(b.nc)
	require.NoError(t, err)
	for i := range n {
		ends := wire.Ends{Type: "squares", Jobs: []wire.End{
			{ID: fmt.Sprintf("job-%d-a", i), Status: wire.StatusSucceeded},
			{ID: fmt.Sprintf("job-%d-b", i), Status: wire.StatusSucceeded},
			{ID: fmt.Sprintf("job-%d-c", i), Status: wire.StatusFailed},
		}}
		_, err := js.Publish(context.Background(), b.c.space.JobEnds("squares"), ends.AppendJSON(nil))
		require.NoError(t, err)
	}
}

// stored reads the record of typ in the stats bucket.
func (b *endsBundle) stored(typ string) (countsRecord, error) {
	var r countsRecord
	e, err := b.c.stats.kv.Get(context.Background(), typ)
	if err == nil {
		err = json.Unmarshal(e.Value(), &r)
	}
	return r, err
}

// receive waits for n values of ch.
func receive[T any](t *testing.T, ch <-chan T, n int, what string) []T {
	t.Helper()
	var got []T
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case v := <-ch:
			got = append(got, v)
		case <-deadline:
			t.Fatalf("%s: %d of %d", what, len(got), n)
		}
	}
	return got
}

// An ends message is acked only once its counts and its sequence are in
// the stats bucket; one that comes back after that (its ack lost, as with
// a conductord killed between the save and the ack) is not counted
// again, and once its ack is confirmed its sequence is dropped.
func TestEndsTaker_RedeliveryNotCountedTwice(t *testing.T) {
	t.Parallel()
	const n = 5
	var (
		b       *endsBundle
		mu      sync.Mutex
		lost    = map[uint64]bool{} // the sequences whose first ack was lost
		checked = make(chan error, 2*n)
		acked   = make(chan uint64, 2*n)
	)
	b = setupEnds(t, "", func(ctx context.Context, m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		seq := md.Sequence.Stream
		mu.Lock()
		first := !lost[seq]
		lost[seq] = true
		mu.Unlock()
		if !first {
			err := m.DoubleAck(ctx)
			if err == nil {
				acked <- seq
			}
			return err
		}
		r, err := b.stored("squares")
		if err == nil && (!slices.Contains(r.Unacked, seq) || r.Succeeded < 2) {
			err = fmt.Errorf("ends %d acked before they were saved: %+v", seq, r)
		}
		checked <- err
		// Lost: they come back at once.
		if err := m.Nak(); err != nil {
			return err
		}
		return errors.New("ack lost")
	})
	b.publishEnds(t, n)

	for _, err := range receive(t, checked, n, "first acks") {
		require.NoError(t, err)
	}
	seqs := receive(t, acked, n, "acks of the ends come back")
	require.Equal(t, counts{Succeeded: 2 * n, Failed: n}, b.c.stats.snapshot()["squares"], "counted once")

	// Stopped, it keeps the confirmed sequences saved for a while (an ack
	// the server confirmed may still be lost with a kill); started again
	// on its data, it has the counts, and the consumer's ack floor drops
	// the sequences.
	b.c.Stop()
	b2 := setupEnds(t, b.dir, nil)
	require.Equal(t, counts{Succeeded: 2 * n, Failed: n}, b2.c.stats.snapshot()["squares"])
	require.Zero(t, b2.c.stats.unackedLen(), "sequences kept: %v of %v", b2.c.stats.unacked, seqs)
}

// The sequences of ends counted whose acks were never confirmed (a
// conductord killed after the save) are saved with the counts, and read
// back at start, so that the ends, when they come back, are not counted
// again.
func TestEndsTaker_UnackedSequencesSurviveRestart(t *testing.T) {
	t.Parallel()
	const n = 3
	tried := make(chan uint64, n)
	b := setupEnds(t, "", func(_ context.Context, m jetstream.Msg) error {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		tried <- md.Sequence.Stream
		return errors.New("killed before the ack")
	})
	b.publishEnds(t, n)
	seqs := receive(t, tried, n, "acks tried")
	b.c.Stop()

	b2 := setupEnds(t, b.dir, nil)
	require.Equal(t, counts{Succeeded: 2 * n, Failed: n}, b2.c.stats.snapshot()["squares"])
	b2.c.stats.mu.Lock()
	kept := slices.Sorted(maps.Keys(b2.c.stats.unacked["squares"]))
	b2.c.stats.mu.Unlock()
	slices.Sort(seqs)
	require.Equal(t, seqs, kept)
	for _, seq := range seqs {
		require.False(t, b2.c.stats.countEnds(seq, wire.Ends{Type: "squares", Jobs: []wire.End{{ID: "x", Status: wire.StatusSucceeded}}}), "ends %d counted again", seq)
	}
}

// Ends announced again (a job found ended when its message came back) are
// archived, but counted only for the jobs the archive had no record of.
func TestEndsTaker_AnnouncedAgainCountedOnce(t *testing.T) {
	t.Parallel()
	b := setupEnds(t, "", nil)
	js, err := jetstream.New(b.nc)
	require.NoError(t, err)
	publish := func(again bool, ids ...string) {
		ends := wire.Ends{Type: "squares", Again: again}
		for _, id := range ids {
			ends.Jobs = append(ends.Jobs, wire.End{ID: id, Status: wire.StatusSucceeded, State: json.RawMessage(`{"id":"` + id + `","type":"squares","status":"succeeded"}`)})
		}
		_, err := js.Publish(context.Background(), b.c.space.JobEnds("squares"), ends.AppendJSON(nil))
		require.NoError(t, err)
	}
	succeeded := func() uint64 { return b.c.stats.snapshot()["squares"].Succeeded }
	publish(false, "job-1", "job-2")
	require.Eventually(t, func() bool { return succeeded() == 2 }, 10*time.Second, 10*time.Millisecond)
	publish(true, "job-1")          // announced before: archived, not counted
	publish(true, "job-2", "job-3") // job-3's first announcement was lost
	require.Eventually(t, func() bool {
		_, ok, err := b.c.archive.store.Get("job-3")
		return err == nil && ok
	}, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return succeeded() >= 3 }, 10*time.Second, 10*time.Millisecond)
	publish(false, "job-4") // after the others: once it is counted, they were taken
	require.Eventually(t, func() bool { return succeeded() >= 4 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(4), succeeded(), "job-1 and job-2 counted once")
}

// A job's ends, delivered to a conductord that was killed before it took
// them, come back only after their lease; the job's message, its ack
// lost with the kill, may come back sooner, and its end be announced
// again. Ends announced again wait until every ends message before them
// is acked: taken first, they counted the job (the archive had no record
// of it), and the first ends counted it again (caught by
// integration's TestConductord_KillKeepsJobCounts, one count too many).
func TestEndsTaker_AnnouncedAgainWaitsForEarlierEnds(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	left := make(chan uint64, 1)
	var once sync.Once
	c.leaveEnds = func(m jetstream.Msg) bool {
		leave := false
		once.Do(func() {
			md, err := m.Metadata()
			require.NoError(t, err)
			left <- md.Sequence.Stream
			leave = true
		})
		return leave
	}
	c.endsLease = 2 * time.Second
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	publish := func(again bool, id string) {
		ends := wire.Ends{Type: "squares", Again: again, Jobs: []wire.End{
			{ID: id, Status: wire.StatusSucceeded, State: json.RawMessage(`{"id":"` + id + `","type":"squares","status":"succeeded"}`)},
		}}
		_, err := js.Publish(context.Background(), c.space.JobEnds("squares"), ends.AppendJSON(nil))
		require.NoError(t, err)
	}
	succeeded := func() uint64 { return c.stats.snapshot()["squares"].Succeeded }

	publish(false, "job-1")
	receive(t, left, 1, "the first ends left")
	publish(true, "job-1") // its message came back first
	require.Eventually(t, func() bool {
		_, ok, err := c.archive.store.Get("job-1")
		return err == nil && ok && succeeded() >= 1
	}, 20*time.Second, 10*time.Millisecond, "job-1 archived and counted")
	// After the others: once it is counted, both ends of job-1 were taken.
	require.Eventually(t, func() bool {
		info, err := js.Consumer(context.Background(), c.space.EndsStream(), subject.EndsConsumer)
		if err != nil {
			return false
		}
		i, err := info.Info(context.Background())
		return err == nil && i.NumPending == 0 && i.NumAckPending == 0
	}, 20*time.Second, 10*time.Millisecond, "both ends of job-1 taken")
	require.Equal(t, uint64(1), succeeded(), "job-1 counted once")
	publish(false, "job-2")
	require.Eventually(t, func() bool { return succeeded() >= 2 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(2), succeeded())
}
