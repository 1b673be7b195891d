package conductor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// Review 19f: the stats keep at most statsMaxUnacked sequences, and past
// it drop the lowest, in bulk. Of the sequences kept, some are certain to
// come back: ends whose ack failed (ackBatch: "they come back when their
// lease ends, and are not counted again"), and ends held not yet acked;
// others come back only if the server is killed within a few seconds:
// ends whose ack the server confirmed. The bound must drop the latter
// before the former, or the ends that come back are counted twice.

// TestAttack19f_BoundKeepsTheEndsCertainToComeBack: the acks of 100 ends
// of type "hiccup" fail (a server hiccup); then ends of busy types come,
// their acks confirmed at once, past the bound, faster than they settle
// (ackSettle). The counts are saved, and a new leader reloads them; the
// 100 ends come back at the end of their lease, and must not be counted
// again.
func TestAttack19f_BoundKeepsTheEndsCertainToComeBack(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, _ := subject.New("default")
	ctx := t.Context()
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: space.StatsBucket()})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: space.EndsStream(), Subjects: []string{space.AllJobEnds()}})
	require.NoError(t, err)
	s, err := newStats(ctx, js, space, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	one := func(typ string) wire.Ends {
		return wire.Ends{Type: typ, Jobs: []wire.End{{ID: "j", Status: wire.StatusSucceeded}}}
	}
	// The hiccup's ends: counted, saved, their acks failed (acked is not
	// called for them: ackBatch leaves them unconfirmed).
	seq := uint64(0)
	for range 100 {
		seq++
		require.True(t, s.countEnds(seq, one("hiccup")))
	}
	require.Empty(t, s.save())
	// The busy types' ends, a flush of 256 at a time, saved, then acked
	// and confirmed.
	for seq < statsMaxUnacked+1000 {
		batch := map[string][]uint64{}
		for range endsFlushAt {
			seq++
			typ := fmt.Sprintf("busy%02d", seq%50)
			require.True(t, s.countEnds(seq, one(typ)))
			batch[typ] = append(batch[typ], seq)
		}
		require.Empty(t, s.save())
		for typ, seqs := range batch {
			s.acked(typ, seqs)
		}
	}
	require.LessOrEqual(t, s.unackedLen(), statsMaxUnacked, "the memory kept is bounded")
	require.Equal(t, countKept(s), s.unackedLen())
	require.Empty(t, s.save())

	// A new leader (or this one after a restart) reads the counts saved.
	s2, err := newStats(ctx, js, space, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Equal(t, uint64(100), s2.snapshot()["hiccup"].Succeeded)
	// The hiccup's ends come back at the end of their lease.
	again := 0
	for q := uint64(1); q <= 100; q++ {
		if s2.countEnds(q, one("hiccup")) {
			again++
		}
	}
	require.Zero(t, again, "of the 100 ends whose acks failed, counted again when they came back (the bound dropped their sequences, the lowest, while it kept %d whose acks were confirmed)", statsMaxUnacked-statsMaxUnacked/8)
	require.Empty(t, s2.save())
	require.Equal(t, uint64(100), s2.snapshot()["hiccup"].Succeeded, "the hiccup's ends, each counted once")
}

// TestAttack19f_StatsBucketHiccupDoesNotStallTheTaker: the stats bucket
// refuses the saves for a few seconds (full: its MaxBytes lowered, as a
// disk or account limit would) while ends of 48 KiB each (final states)
// keep coming, then accepts them again. The taker holds what it counted
// meanwhile (bounded by endsMaxAckPending), and once the bucket accepts,
// every end is counted, once, within seconds, not after a lease (30 s);
// the unacked sequences kept stay consistent.
func TestAttack19f_StatsBucketHiccupDoesNotStallTheTaker(t *testing.T) {
	t.Parallel()
	largeEnds(t, "full")
}

// TestAttack19f_StatsBucketGoneDoesNotStallTheTaker: the same, the bucket
// deleted (by hand) and made again.
func TestAttack19f_StatsBucketGoneDoesNotStallTheTaker(t *testing.T) {
	t.Parallel()
	largeEnds(t, "gone")
}

// refusals counts the saves the stats bucket refused, as logged.
type refusals struct {
	slog.Handler
	n *atomic.Int64
}

func (r refusals) Enabled(context.Context, slog.Level) bool { return true }

func (r refusals) Handle(ctx context.Context, rec slog.Record) error {
	if strings.HasPrefix(rec.Message, "save job counts") {
		r.n.Add(1)
	}
	return nil
}

// largeEnds publishes 1,100 ends of 48 KiB each, the stats bucket refusing
// the saves until a few were refused if hiccup, and waits for all to be
// counted and saved.
func largeEnds(t *testing.T, hiccup string) {
	var refused atomic.Int64
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Logger: slog.New(refusals{slog.DiscardHandler, &refused})})
	require.NoError(t, err)
	var seen atomic.Int64
	c.leaveEnds = func(jetstream.Msg) bool { seen.Add(1); return false }
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := t.Context()
	var slow atomic.Int64
	var slowOn atomic.Value
	c.nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			slow.Add(1)
			if sub != nil {
				slowOn.Store(sub.Subject)
			}
		}
	})
	switch hiccup {
	case "full":
		_, err := js.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: c.space.StatsBucket(), MaxBytes: 1})
		require.NoError(t, err)
	case "gone":
		require.NoError(t, js.DeleteKeyValue(ctx, c.space.StatsBucket()))
	}

	const size = 48 << 10
	pad := strings.Repeat("x", size)
	const n = 1100
	for i := range n {
		ends := wire.Ends{Type: "squares", Jobs: []wire.End{{ID: fmt.Sprintf("job-%d", i), Status: wire.StatusSucceeded}}}
		data := ends.AppendJSON(nil)
		data = append(data[:len(data)-1], `,"pad":"`+pad+`"}`...)
		_, err := js.PublishAsync(c.space.JobEnds("squares"), data)
		require.NoError(t, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("the ends were not all published")
	}
	if hiccup != "" {
		require.Eventually(t, func() bool { return refused.Load() >= 5 }, 15*time.Second, 10*time.Millisecond, "the full bucket refuses the saves: %d refused, %d taken", refused.Load(), seen.Load())
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: c.space.StatsBucket()})
		require.NoError(t, err)
	}
	ok := assert.Eventually(t, func() bool {
		c.stats.mu.Lock()
		defer c.stats.mu.Unlock()
		return c.stats.saved["squares"].Succeeded == n
	}, 15*time.Second, 10*time.Millisecond)
	c.stats.mu.Lock()
	saved := c.stats.saved["squares"].Succeeded
	c.stats.mu.Unlock()
	require.True(t, ok, "of %d ends of 48 KiB, %d counted and saved within 15 s (%d taken, %d saves refused, %d slow-consumer drops on conductord's connection)",
		n, saved, seen.Load(), refused.Load(), slow.Load())
	// A drop on conductord's connection (seen with the bucket gone, on
	// the pull's inbox) is reported, not failed: every end came anyway.
	if slow.Load() > 0 {
		t.Logf("conductord's connection dropped %d messages (slow consumer) on %v", slow.Load(), slowOn.Load())
	}
	require.Equal(t, countKept(c.stats), c.stats.unackedLen())
}
