package conductor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// Review 18: the counts and the members across leaders that change hands.

// attack18Bundle is a single JetStream server's URL and an admin
// connection to it.
func attack18Bundle(t *testing.T) (*testBundle, string) {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return &testBundle{nc: nc, js: js}, ns.ClientURL()
}

// TestAttack18_Failover_TwinsCountOnce: even while two conductords both
// believe they lead (TestAttack18_Leader_SameIDTwoLeaders: one id in two
// data directories, the lease passed back and forth every third of a
// lease), the counts' compare-and-swap fence must keep every job
// counted exactly once, as both report.
//
// FOUND by the outside attack, fixed since (high, with the twin-id finding): no job is counted twice (the
// fence holds against that), but the counts stall: 60 s after the 200 jobs
// succeeded only 125 to 154 were counted, with ~14 ends messages of the
// ends stream ack-pending, redelivered again and again, and the ack floor
// stuck, while the twins passed the lease back and forth (26 terms each
// in 70 s). Each deposed twin leaves its held ends unacked for the ack
// wait, and the next turn comes before they are saved. Fix: make twin
// ids impossible (see TestAttack18_Leader_SameIDTwoLeaders); a leader
// deposed by a count conflict should also back off from the election
// for a lease rather than take the lease straight back.
func TestAttack18_Failover_TwinsCountOnce(t *testing.T) {
	t.Parallel()
	bundle, url := attack18Bundle(t)
	cfg := conductor.Config{LeaderLease: 300 * time.Millisecond}
	a := attack18Start(t, url, "twin-2", cfg)
	b := attack18Start(t, url, "twin-2", cfg)
	startAgentN(t, bundle, 4, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const n = 200
	submitThrough(t, ctx, n, a, b)
	// Ends the loser of a turn held unacked come back after the ends
	// consumer's ack wait (30s).
	t.Cleanup(func() { attack18LogEnds(t, bundle) })
	for _, c := range []*conductor.Conductor{a, b} {
		require.Eventually(t, func() bool { return succeeded(ctx, c, "squares") >= n },
			60*time.Second, 20*time.Millisecond, "every job counted: %d of %d; a %+v, b %+v",
			succeeded(ctx, c, "squares"), n, a.Leader(), b.Leader())
	}
	require.Never(t, func() bool { return succeeded(ctx, a, "squares") > n || succeeded(ctx, b, "squares") > n },
		2*time.Second, 20*time.Millisecond, "a job counted twice: a %d, b %d", succeeded(ctx, a, "squares"), succeeded(ctx, b, "squares"))
}

// attack18LogEnds logs the ends stream and consumer: ends not yet taken
// (a lag) or none left (counts lost).
func attack18LogEnds(t *testing.T, bundle *testBundle) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := bundle.js.Stream(ctx, "conductor-default-ends")
	if err != nil {
		t.Logf("ends stream: %v", err)
		return
	}
	info, err := st.Info(ctx)
	if err == nil {
		t.Logf("ends stream: %d messages, first %d last %d", info.State.Msgs, info.State.FirstSeq, info.State.LastSeq)
	}
	for ci := range st.ListConsumers(ctx).Info() {
		t.Logf("ends consumer %s: pending %d, ack pending %d, redelivered %d, ack floor %d",
			ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.AckFloor.Stream)
	}
}

// TestAttack18_Failover_MemberIDOutsideKeys: a conductord's id comes from
// --data/conductord.id, written by hand or by a tool as much as by
// conductord; an id conductordID accepts must be counted among the
// members by every conductord, or its archive is never asked
// (archiver.peers asks only when peers() > 0) and the jobs it archived
// read as not found through the others.
//
// FOUND by the outside attack, fixed since (medium): what was wrong: conductordID accepts any id without '.', ' ', '*',
// '>' or a newline, up to 64 bytes, but subject.MemberKey(id) must be a
// valid key (letters, digits, '-', '_', '/', '='): with "wéb-1" or
// "web:1" the member Put fails with ErrInvalidKey, which count() drops
// silently, so no conductord counts it (Members stays 1 on both).
// Fix: check the id read with the KV key rules (and log/replace an id
// that fails them), and log the member Put's error instead of dropping
// it.
func TestAttack18_Failover_MemberIDOutsideKeys(t *testing.T) {
	t.Parallel()
	_, url := attack18Bundle(t)
	cfg := conductor.Config{LeaderLease: 300 * time.Millisecond}
	for _, id := range []string{"wéb-1", "web:1"} {
		t.Run(id, func(t *testing.T) {
			a := attack18Start(t, url, "", cfg)
			b := attack18Start(t, url, id, cfg)
			require.NotEqual(t, id, b.Leader().Conductord, "an id that is no key is replaced")
			require.Regexp(t, `^[A-Za-z0-9_-]+$`, b.Leader().Conductord)
			require.Eventually(t, func() bool { return a.Leader().Members == 2 && b.Leader().Members == 2 },
				5*time.Second, 10*time.Millisecond, "id %q counted: a %+v, b %+v", id, a.Leader(), b.Leader())
			a.Stop()
			b.Stop()
		})
	}
}

// TestAttack18_Failover_StatsKeyDeletedByHand: an operator deletes a
// type's record from the stats bucket (nats kv del, to reset the counts).
// The leader's next save at the revision it read is refused (the fence
// against another leader); it must not lose its leadership for good nor
// stop counting: the jobs that end after the delete are counted, the
// record is written again, and what the conductor reports is what the
// bucket holds.
func TestAttack18_Failover_StatsKeyDeletedByHand(t *testing.T) {
	t.Parallel()
	bundle, url := attack18Bundle(t)
	c := attack18Start(t, url, "", conductor.Config{LeaderLease: 300 * time.Millisecond})
	startAgentN(t, bundle, 2, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	submitThrough(t, ctx, 10, c)
	require.Eventually(t, func() bool { return succeeded(ctx, c, "squares") == 10 }, 10*time.Second, 10*time.Millisecond)

	kv, err := bundle.js.KeyValue(ctx, "conductor-default-stats")
	require.NoError(t, err)
	require.NoError(t, kv.Delete(ctx, "squares"))
	submitThrough(t, ctx, 10, c)

	// The ends held when the save was refused come back after the ends
	// consumer's ack wait (30s).
	require.Eventually(t, func() bool {
		e, err := kv.Get(ctx, "squares")
		if err != nil || !c.Leader().Leading {
			return false
		}
		var r struct {
			Succeeded uint64 `json:"succeeded"`
		}
		return json.Unmarshal(e.Value(), &r) == nil && r.Succeeded >= 10 && succeeded(ctx, c, "squares") == r.Succeeded
	}, 60*time.Second, 50*time.Millisecond, "counting again after the delete: reported %d, leading %v", succeeded(ctx, c, "squares"), c.Leader().Leading)
}

// TestAttack18_Failover_StopsUnderLoadCountOnce: six conductords, jobs
// flowing from an outside client; the leader is stopped, then the next
// one, five times, while jobs end (a rolling upgrade): every job succeeds once and the
// survivor counts each exactly once, neither lost in a hand-over nor
// counted by two, and without waiting out the ends' ack wait, as
// docs/deployment.md says of a stop ("it gives the lease up after its
// last flush of the counts").
//
// FOUND by the outside attack, fixed since (medium): what was wrong: the counts are right in the end (the fence holds: no
// job counted twice), but in 2 runs of 5 with three conductords and two
// stops, only ~30.7 s after the last wait ended (1.0 s otherwise); with six
// and five stops, every run: 595 to 597 of 600 after 10 s, 600 after 30.6 s: a
// leader stopped under load leaves the ends messages its pull
// (cons.Messages, endsBatch at a time) had delivered but the taker had
// not taken unacked; it.Stop drops them and they come back to the next
// leader only after the consumer's AckWait (endsLease, 30s). Every
// planned stop of the leader under load (each step of a rolling upgrade)
// makes GET /v1/pools under-count for 30s. Fix: at the end of a term,
// it.Drain() instead of it.Stop() and take (or Nak with no delay) what
// was delivered before the last flush, so the next leader gets them at
// once.
func TestAttack18_Failover_StopsUnderLoadCountOnce(t *testing.T) {
	t.Parallel()
	bundle, url := attack18Bundle(t)
	cfg := conductor.Config{LeaderLease: 300 * time.Millisecond}
	const k = 6 // conductords; all but one stopped in turn, each while it leads
	var cs []*conductor.Conductor
	for range k {
		cs = append(cs, attack18Start(t, url, "", cfg))
	}
	startAgentN(t, bundle, 4, "squares")
	cl, err := client.Connect(url, client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const n = 100 * k
	ids := make(chan string, n)
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		for i := range n {
			id, err := cl.Submit(ctx, "squares", i)
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			ids <- id
		}
	}()
	alive := cs
	for range k - 1 {
		// Stopped once a further 100 jobs have been submitted.
		require.Eventually(t, func() bool { return len(ids) >= 100*(k+1-len(alive)) }, 30*time.Second, time.Millisecond)
		leader := leaderOf(t, 5*time.Second, alive...)
		leader.Stop()
		var rest []*conductor.Conductor
		for _, c := range alive {
			if c != leader {
				rest = append(rest, c)
			}
		}
		alive = rest
	}
	<-submitted
	close(ids)
	total := 0
	for id := range ids {
		j, err := cl.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status, "job %s", id)
		require.Len(t, j.History, 1, "job %s ran once", id)
		total++
	}
	require.Equal(t, n, total)
	last := leaderOf(t, 5*time.Second, alive...)
	waited := time.Now()
	defer func() {
		t.Logf("counted %d, %s after the waits ended", succeeded(ctx, last, "squares"), time.Since(waited))
	}()
	require.Eventually(t, func() bool { return succeeded(ctx, last, "squares") >= n }, 10*time.Second, 20*time.Millisecond,
		"every job counted: %d of %d", succeeded(ctx, last, "squares"), n)
	require.Never(t, func() bool { return succeeded(ctx, last, "squares") > n }, time.Second, 20*time.Millisecond, "a job counted twice")
}

// TestAttack18_Failover_LeaderBucketDeletedByHand: an operator deletes the
// leader bucket (nats kv rm, a cleanup script, a stream restored from an
// old backup without it). Some conductord must lead again and count the
// jobs that end afterwards, as the job stream and the other buckets are
// made again by a restart only if they are missing at start.
//
// FOUND by the outside attack, fixed since (medium): what was wrong: nothing makes the leader bucket again once
// conductord runs: the leader's renewals fail, it steps down, and every
// create of every conductord fails (stream not found) for as long as they
// run: no conductord leads, no end is taken, counted or archived, no
// batch ends, no stray repair, no cancel feed to the hosts, until a
// restart. Fix: on jetstream.ErrBucketNotFound / stream not found in
// step, make the bucket again (ensureBucket with the leader bucket's
// config) and log it loudly.
func TestAttack18_Failover_LeaderBucketDeletedByHand(t *testing.T) {
	t.Parallel()
	bundle, url := attack18Bundle(t)
	c := attack18Start(t, url, "", conductor.Config{LeaderLease: 300 * time.Millisecond})
	startAgentN(t, bundle, 2, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.True(t, c.Leader().Leading)
	require.NoError(t, bundle.js.DeleteKeyValue(ctx, "conductor-default-leader"))
	require.Eventually(t, func() bool { return !c.Leader().Leading }, 5*time.Second, time.Millisecond, "the leader's renewals fail")

	submitThrough(t, ctx, 10, c)
	require.Eventually(t, func() bool { return c.Leader().Leading && succeeded(ctx, c, "squares") == 10 },
		10*time.Second, 10*time.Millisecond, "a conductord leads again and counts")
}
