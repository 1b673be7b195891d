package conductor_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// serverOn starts an embedded JetStream server storing into dir.
func serverOn(t *testing.T, dir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
	})
	require.NoError(t, err)
	ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// TestNATSServer_CrashBringsBackAckedMessages shows, on the server alone,
// how a kill leaves stray job messages (docs/reliability.md, "Delivery";
// the conductor's repair is TestConductor_RepairsStrayMessages). In
// nats-server v2.15.2's file store, acking the first messages of a block
// moves the block's first sequence in memory, leaves their records in its
// file, and writes their tombstones into the last block; once that block
// empties it is deleted, tombstones and all, as they are below the
// stream's first sequence; a start after a kill rebuilds the stream from
// the block files, and the acked messages are back, below the consumer's
// ack floor: never delivered, never removed. If this test fails after an
// upgrade of the server, the server no longer does so: see whether the
// repair is still needed.
func TestNATSServer_CrashBringsBackAckedMessages(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	ns := serverOn(t, dir)
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// A work queue; MaxBytes makes its blocks small (32 kB).
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"jobs"}, Retention: jetstream.WorkQueuePolicy, MaxBytes: 100_000, Discard: jetstream.DiscardNew})
	require.NoError(t, err)
	c, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "C", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour})
	require.NoError(t, err)
	payload := make([]byte, 1000)
	publish := func() {
		_, err := js.Publish(ctx, "jobs", payload)
		require.NoError(t, err)
	}
	fetch := func(n int) []jetstream.Msg {
		b, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		var ms []jetstream.Msg
		for m := range b.Messages() {
			ms = append(ms, m)
		}
		require.Len(t, ms, n)
		return ms
	}
	ack := func(ms []jetstream.Msg) {
		for _, m := range ms {
			require.NoError(t, m.DoubleAck(ctx))
		}
	}
	// Messages until the second block begins: the first holds 1 to n.
	second := filepath.Join(dir, "jetstream", "$G", "streams", "S", "msgs", "2.blk")
	n := 0
	for ; ; n++ {
		publish()
		if _, err := os.Stat(second); err == nil {
			break
		}
	}
	first := fetch(n)
	ack(first[:n-1]) // the head of the first block: tombstones into the second
	ack(fetch(1))    // the second block empties, and goes
	// The last message of the first block is still held, as a worker
	// stopped past a block's end holds its jobs.

	// A kill now leaves what the store has in its files (the page cache
	// survives it): a copy of them, started on. The consumer's state is
	// written on a timer (at most 100ms after a change) that nothing in
	// the server tells of: copies are made until one has it.
	type image struct {
		back      int      // acked messages back in the stream
		floor     uint64   // the consumer's ack floor
		delivered []uint64 // what it delivers when asked
	}
	crash := func() (im image) {
		dir2 := t.TempDir()
		if err := os.CopyFS(dir2, os.DirFS(dir)); err != nil {
			// A file the server renamed or removed while it was copied
			// (its state's temporary file): another copy.
			t.Logf("copy the store: %v", err)
			return im
		}
		ns2, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir2, NoSigs: true, NoLog: true})
		require.NoError(t, err)
		ns2.Start()
		defer func() {
			ns2.Shutdown()
			ns2.WaitForShutdown()
		}()
		require.True(t, ns2.ReadyForConnections(10*time.Second))
		nc2, err := nats.Connect(ns2.ClientURL())
		require.NoError(t, err)
		defer nc2.Close()
		js2, err := jetstream.New(nc2)
		require.NoError(t, err)
		s, err := js2.Stream(ctx, "S")
		require.NoError(t, err)
		for seq := uint64(1); seq < uint64(n); seq++ {
			if _, err := s.GetMsg(ctx, seq); err == nil {
				im.back++
			}
		}
		c, err := s.Consumer(ctx, "C")
		require.NoError(t, err)
		im.floor = c.CachedInfo().AckFloor.Stream
		b, err := c.FetchNoWait(100)
		require.NoError(t, err)
		for m := range b.Messages() {
			md, err := m.Metadata()
			require.NoError(t, err)
			im.delivered = append(im.delivered, md.Sequence.Stream)
		}
		return im
	}
	var im image
	require.Eventually(t, func() bool {
		im = crash()
		return im.floor == uint64(n-1)
	}, 10*time.Second, 20*time.Millisecond, "the consumer's state is never written")
	require.Equal(t, image{back: n - 1, floor: uint64(n - 1)}, im,
		"the %d acked messages of the first block are back, below the ack floor, and none is delivered", n-1)
}
