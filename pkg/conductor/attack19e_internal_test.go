package conductor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/testlog"
	"github.com/conductor-run/conductor/internal/wire"
)

// Review 19e: conductord's leader makes the high and low consumers of the
// subjects that hold jobs (priorities.go). A publisher queues high and low
// jobs on many types that no host serves: no consumer is made for any of
// them (a consumer costs the server on every ack of the job stream), the
// one served type among them gets its consumer within a pass or two, and
// the junk subjects are looked up once per recheck, not at every pass.
func TestAttack19e_PriorityPassAgainstAFloodOfUnservedTypes(t *testing.T) {
	t.Parallel()
	c, nc, js := startWithJS(t, nil)
	ctx := t.Context()
	require.NoError(t, hostsvc.MakeConsumers(ctx, js, c.space, "served", 0))

	// The consumer API requests the leader sends: its lookups of the
	// junk types' normal consumers, and any creation.
	var lookups, creates atomic.Int64
	var created atomic.Value
	created.Store("")
	spy, err := nc.Subscribe("$JS.API.CONSUMER.>", func(m *nats.Msg) {
		switch {
		case strings.HasPrefix(m.Subject, "$JS.API.CONSUMER.INFO."+c.space.JobStream()+".") && strings.Contains(m.Subject, "junk"):
			lookups.Add(1)
		case strings.HasPrefix(m.Subject, "$JS.API.CONSUMER.CREATE.") || strings.HasPrefix(m.Subject, "$JS.API.CONSUMER.DURABLE.CREATE."):
			creates.Add(1)
			if strings.Contains(m.Subject, "junk") {
				created.Store(m.Subject)
			}
		}
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = spy.Unsubscribe() })

	const junk = 300
	for i := range junk {
		for _, p := range []string{"high", "low"} {
			_, err := js.PublishAsync(c.space.JobAt(fmt.Sprintf("junk%d", i), p), []byte("1"))
			require.NoError(t, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("the junk was not stored")
	}
	_, err = js.Publish(ctx, c.space.JobAt("served", "high"), []byte("1"))
	require.NoError(t, err)
	queued := time.Now()
	require.Eventually(t, func() bool {
		_, err := js.Consumer(ctx, c.space.JobStream(), c.space.ConsumerAt("served", "high"))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "the served type's high consumer was never made")
	t.Logf("the served type's high consumer came %s after its job", time.Since(queued))

	// Every junk subject looked up once (its type's normal consumer)...
	require.Eventually(t, func() bool { return lookups.Load() >= 2*junk }, 10*time.Second, 10*time.Millisecond,
		"the junk subjects were not all looked at: %d", lookups.Load())
	first := lookups.Load()
	// ...and not again before the recheck, though a pass comes every
	// second.
	require.Never(t, func() bool { return lookups.Load() > first+junk/10 }, 4*time.Second, 50*time.Millisecond,
		"the junk subjects are looked up at every pass")
	require.Empty(t, created.Load(), "a consumer was made for a type no host serves")
	stream, err := js.Stream(ctx, c.space.JobStream())
	require.NoError(t, err)
	var names []string
	for name := range stream.ConsumerNames(ctx).Name() {
		names = append(names, name)
	}
	require.ElementsMatch(t, []string{c.space.Consumer("served"), c.space.ConsumerAt("served", "high")}, names)
}

// TestAttack19e_StatsKeptFollowsTheMaps: the count of unacked sequences
// kept (stats.kept, which bound trusts) stays the number the maps hold
// through every way they change: ends counted (past the bound too), acks
// confirmed and settled, the ack floor, saves and a reload (a restart, or
// a new leader); and an end counted and saved is not counted again after
// a reload, unless the ack floor or a settled ack let it go.
func TestAttack19e_StatsKeptFollowsTheMaps(t *testing.T) {
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

	rng := rand.New(rand.NewPCG(19, 5))
	one := func(typ string) wire.Ends {
		return wire.Ends{Type: typ, Jobs: []wire.End{{ID: "j", Status: wire.StatusSucceeded}}}
	}
	check := func(what string) {
		t.Helper()
		require.Equal(t, countKept(s), s.unackedLen(), "after %s", what)
	}
	seq, floor := uint64(0), uint64(0)
	for round := range 6 {
		// Ends of 40 types, more than the bound in the 3rd round.
		n := 3000
		if round == 2 {
			n = statsMaxUnacked + 2000
		}
		var seqs []uint64
		for range n {
			seq++
			require.True(t, s.countEnds(seq, one(fmt.Sprintf("t%02d", rng.IntN(40)))))
			seqs = append(seqs, seq)
		}
		check("counting")
		// Some acks confirmed, some of them settled long ago.
		byType := map[string][]uint64{}
		s.mu.Lock()
		for typ, m := range s.unacked {
			for q := range m {
				if rng.IntN(3) == 0 {
					byType[typ] = append(byType[typ], q)
				}
			}
		}
		s.mu.Unlock()
		for typ, qs := range byType {
			s.acked(typ, qs)
			s.mu.Lock()
			for _, q := range qs[:len(qs)/2] {
				if _, ok := s.unacked[typ][q]; ok {
					s.unacked[typ][q] = time.Now().Add(-2 * ackSettle)
				}
			}
			s.mu.Unlock()
			s.acked(typ, nil)
		}
		check("acks")
		floor += uint64(n / 2)
		s.ackedTo(floor)
		check("the ack floor")
		require.Empty(t, s.save())
		check("a save")
		s.mu.Lock()
		kept := map[string]map[uint64]bool{}
		for typ, m := range s.unacked {
			kept[typ] = map[uint64]bool{}
			for q := range m {
				kept[typ][q] = true
			}
		}
		before := maps.Clone(s.byType)
		s.mu.Unlock()
		require.NoError(t, s.reload(ctx))
		check("a reload")
		require.Equal(t, before, s.snapshot(), "the counts saved are those counted")
		// Every end kept comes again (its ack lost): none is counted twice.
		for typ, m := range kept {
			for q := range m {
				require.False(t, s.countEnds(q, one(typ)), "seq %d of %s counted again after a reload", q, typ)
			}
		}
		check("ends again")
	}
}

// TestAttack19e_PriorityConsumerRefusedIsLoggedOncePerRecheck: a served
// type's high consumer cannot be made (a consumer made by hand on its
// subject holds it: the work queue refuses a second one). The leader's
// pass, every second, asks again only at its recheck, and logs the
// refusal once per recheck, not at every pass; the other types' consumers
// are made meanwhile.
func TestAttack19e_PriorityConsumerRefusedIsLoggedOncePerRecheck(t *testing.T) {
	t.Parallel()
	var out testlog.Buffer
	c, _, js := startWithJS(t, slog.New(slog.NewTextHandler(&out, nil)))
	ctx := t.Context()
	for _, typ := range []string{"blocked", "fine"} {
		require.NoError(t, hostsvc.MakeConsumers(ctx, js, c.space, typ, 0))
	}
	_, err := js.CreateConsumer(ctx, c.space.JobStream(), jetstream.ConsumerConfig{
		Durable: "rogue", FilterSubject: c.space.JobAt("blocked", "high"), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	for _, typ := range []string{"blocked", "fine"} {
		_, err = js.Publish(ctx, c.space.JobAt(typ, "high"), []byte("1"))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		_, err := js.Consumer(ctx, c.space.JobStream(), c.space.ConsumerAt("fine", "high"))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "the other type's high consumer was never made")
	const warning = "make the consumer of high or low jobs; retrying"
	require.Eventually(t, func() bool { return strings.Contains(out.String(), warning) }, 5*time.Second, 10*time.Millisecond,
		"the refusal was never logged:\n%s", out.String())
	// Passes go on every second; the refusal is not logged again before
	// the recheck (10s).
	require.Never(t, func() bool { return strings.Count(out.String(), warning) > 1 }, 4*time.Second, 50*time.Millisecond,
		"the refusal is logged at every pass")
}

// startWithJS starts a Conductor on a new data directory, logging to log
// (nil: the default), and returns it with a connection to its server and
// a JetStream client on it.
func startWithJS(t *testing.T, log *slog.Logger) (*Conductor, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Logger: log})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return c, nc, js
}
