package conductor_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// serverOn starts an embedded JetStream server storing into dir, whose
// file stores sync (and compact their blocks) every syncEvery.
func serverOn(t *testing.T, dir string, syncEvery time.Duration) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true, SyncInterval: syncEvery,
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
// writes their tombstones into a later block and moves the block's first
// sequence, leaving their records in its file; the periodic sync compacts
// the later block and drops those tombstones (they are below the stream's
// first sequence); on a start after a crash the store rebuilds the stream
// from the block files, and the acked messages are back, below the
// consumer's ack floor: never delivered, never removed. If this test fails
// after an upgrade of the server, the server no longer does so: see
// whether the repair is still needed.
func TestNATSServer_CrashBringsBackAckedMessages(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	ns := serverOn(t, dir, 100*time.Millisecond)
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// A work queue with a consumer per subject, as the job stream has per
	// priority; MaxBytes makes its blocks small (32 kB, about 31 of these
	// messages).
	cfg := jetstream.StreamConfig{Name: "S", Subjects: []string{"a", "b"}, Retention: jetstream.WorkQueuePolicy, MaxBytes: 100_000, Discard: jetstream.DiscardNew}
	_, err = js.CreateStream(ctx, cfg)
	require.NoError(t, err)
	ca, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "CA", FilterSubject: "a", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	_, err = js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "CB", FilterSubject: "b", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	payload := make([]byte, 1000)
	publish := func(subj string, n int) {
		for range n {
			_, err := js.Publish(ctx, subj, payload)
			require.NoError(t, err)
		}
	}
	ack := func(n int) {
		b, err := ca.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		got := 0
		for m := range b.Messages() {
			require.NoError(t, m.DoubleAck(ctx))
			got++
		}
		require.Equal(t, n, got)
	}

	publish("a", 5)  // 1-5: the head of the first block
	publish("b", 26) // 6-31: the rest of it, which CB holds
	ack(5)           // the head's tombstones go to the next block
	publish("a", 60) // 32-91: that block, and the next
	ack(60)
	publish("b", 40) // one block more: those two are no longer the last

	// A kill now leaves what the store has in its files (the page cache
	// survives it): a copy of them, started on. The server's sync compacts
	// the block that holds the head's tombstones and drops them, and the
	// consumer's state is written, each on a timer of its own, which
	// nothing in the server tells of: the copies are made until one shows
	// the strays, if any does within 10s.
	type image struct {
		back      []uint64 // acked messages of CA back in the stream
		floor     uint64   // CA's ack floor
		delivered []uint64 // what CA delivers when asked
	}
	crash := func() (im image) {
		dir2 := t.TempDir()
		require.NoError(t, os.CopyFS(dir2, os.DirFS(dir)))
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
		for seq := uint64(1); seq <= 5; seq++ {
			if _, err := s.GetMsg(ctx, seq); err == nil {
				im.back = append(im.back, seq)
			}
		}
		c, err := s.Consumer(ctx, "CA")
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
		return len(im.back) > 0 && im.floor >= im.back[len(im.back)-1]
	}, 10*time.Second, 50*time.Millisecond, "no copy shows acked messages back below the ack floor")
	for _, seq := range im.back {
		require.NotContains(t, im.delivered, seq, "CA delivers a message back below its floor")
	}
}
