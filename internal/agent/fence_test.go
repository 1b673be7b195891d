package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

func TestFence(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	mineClaim := wire.FirstClaim(10, 1, "me")
	mine := &wire.Job{
		ID: "j", Status: wire.StatusSucceeded, Attempts: 1, Holder: mineClaim.String(), Skipped: 0,
		History: []wire.Attempt{{Attempt: 1, Host: "a", StartedAt: at, EndedAt: at.Add(time.Second)}},
	}
	running := func(holder wire.Holder, attempt int, host string) *wire.Job {
		return &wire.Job{
			ID: "j", Status: wire.StatusRunning, Attempts: attempt, Holder: holder.String(), Skipped: 2,
			History: []wire.Attempt{{Attempt: attempt, Host: host, StartedAt: at}},
		}
	}
	for _, tc := range []struct {
		name string
		cur  *wire.Job
		want fenceVerdict
		// of a write: the history written and the skip count kept
		history []wire.Attempt
		skipped int
	}{
		{name: "no state: written", cur: nil, want: fenceWrite, history: mine.History},
		{
			name: "the queued state of its submitter, changed since (a skip): written over",
			cur:  &wire.Job{ID: "j", Status: wire.StatusQueued, Skipped: 1}, want: fenceWrite,
			history: mine.History, skipped: 1,
		},
		{
			name: "its own running state: replaced by its end",
			cur:  running(mineClaim, 1, "a"), want: fenceWrite, history: mine.History, skipped: 2,
		},
		{
			name: "a newer claim running: superseded",
			cur:  running(wire.ClaimOver(11, 1, "b"), 2, "b"), want: fenceNewer,
		},
		{
			name: "a claim of the same rank (a copy of its message): superseded",
			cur:  running(wire.FirstClaim(10, 1, "copy"), 1, "c"), want: fenceNewer,
		},
		{
			name: "an older claim left running: written, the other marked lost",
			cur:  running(wire.ClaimOver(3, 1, "old"), 1, "z"), want: fenceWrite, skipped: 2,
			history: []wire.Attempt{{Attempt: 1, Host: "z", StartedAt: at, Lost: true}, mine.History[0]},
		},
		{
			name: "ended by a newer attempt: superseded",
			cur:  &wire.Job{ID: "j", Status: wire.StatusSucceeded, Holder: wire.ClaimOver(11, 1, "b").String()}, want: fenceEnded,
		},
		{
			name: "ended, even by an older claim: never replaced",
			cur:  &wire.Job{ID: "j", Status: wire.StatusDead, Holder: wire.ClaimOver(1, 1, "old").String()}, want: fenceEnded,
		},
		{
			name: "a first claim on a revision the state never had (a forged header): written over",
			cur:  running(wire.FirstClaim(1e9, 1, "forged"), 1, "f"), want: fenceWrite, skipped: 2,
			history: []wire.Attempt{{Attempt: 1, Host: "f", StartedAt: at, Lost: true}, mine.History[0]},
		},
		{
			name: "cancelled: never replaced",
			cur:  &wire.Job{ID: "j", Status: wire.StatusCancelled}, want: fenceEnded,
		},
		{
			name: "its own end, from a write whose answer was lost: stored",
			cur:  &wire.Job{ID: "j", Status: wire.StatusSucceeded, Holder: mineClaim.String(), History: mine.History}, want: fenceStored,
		},
		{
			name: "an end of another status with its holder (not its write): never replaced",
			cur:  &wire.Job{ID: "j", Status: wire.StatusCancelled, Holder: mineClaim.String()}, want: fenceEnded,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, next := fence(tc.cur, 20, mine, mineClaim)
			require.Equal(t, tc.want, v)
			if v == fenceStored {
				require.Same(t, tc.cur, next)
				return
			}
			if v != fenceWrite {
				require.Nil(t, next)
				return
			}
			assert.Equal(t, tc.history, next.History)
			assert.Equal(t, tc.skipped, next.Skipped)
			assert.Equal(t, mine.Holder, next.Holder)
			assert.Equal(t, mine.Status, next.Status)
		})
	}
}

func TestSuperseded_RecordsTheAttempt(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	late := wire.Attempt{Attempt: 1, Host: "a", StartedAt: at, EndedAt: at.Add(time.Minute), Error: "boom"}
	final := &wire.Job{ID: "j", Status: wire.StatusSucceeded, History: []wire.Attempt{
		{Attempt: 1, Host: "a", StartedAt: at, Lost: true},
		{Attempt: 2, Host: "b", StartedAt: at.Add(time.Second), EndedAt: at.Add(2 * time.Second)},
	}}
	got := superseded(final, late)
	want := late
	want.Superseded = true
	require.Equal(t, []wire.Attempt{want, final.History[1]}, got.History, "in place of its lost entry")
	require.True(t, final.History[0].Lost, "the state read is not changed")

	// No entry of it: before the attempt that holds the job.
	got = superseded(&wire.Job{History: final.History[1:]}, late)
	require.Equal(t, []wire.Attempt{want, final.History[1]}, got.History)
}

func TestClaimed_FillsTheAttemptsLost(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	prev := &wire.Job{ID: "j", Status: wire.StatusFailed, History: []wire.Attempt{
		{Attempt: 1, Host: "a", StartedAt: at, EndedAt: at, Error: "boom"},
	}}
	own := wire.Attempt{Attempt: 4, Host: "c", StartedAt: at}
	mine := &wire.Job{ID: "j", Status: wire.StatusRunning, Attempts: 4, Holder: "7.me", History: []wire.Attempt{own}}
	got := claimed(prev, mine, false)
	require.Equal(t, []wire.Attempt{prev.History[0], {Attempt: 2, Lost: true}, {Attempt: 3, Lost: true}, own}, got.History)
	got = claimed(prev, mine, true)
	require.Equal(t, []wire.Attempt{prev.History[0], own}, got.History, "a requeued job counts from 1 again")
}

func TestCapHistory(t *testing.T) {
	t.Parallel()
	j := &wire.Job{HistoryDropped: 3}
	for i := range wire.MaxHistory + 5 {
		j.History = append(j.History, wire.Attempt{Attempt: i + 1})
	}
	capHistory(j)
	require.Len(t, j.History, wire.MaxHistory)
	require.Equal(t, 6, j.History[0].Attempt)
	require.Equal(t, 8, j.HistoryDropped)
}

// secondSource makes another host's source of the same pool, on b's server.
func (b *sourceBundle) secondSource(t *testing.T, host string) *source {
	t.Helper()
	src, err := newSource(sourceConfig{
		nc: b.nc, js: b.jsAgent, kv: b.kv, space: b.space, typ: "sq", host: host, workers: 2, maxAttempts: 3, maxResult: 1 << 20,
		expires: 5 * time.Second, ackWait: 30 * time.Second, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	require.NoError(t, err)
	t.Cleanup(src.close)
	return src
}

// takeFromStale hands the one job queued to stale, then makes its lease end
// as if its host had stopped past it: the server delivers it again, to
// fresh, which claims it.
func takeFromStale(t *testing.T, stale, fresh *source) (old, job *broker.Job) {
	t.Helper()
	old = next(t, stale)
	h := old.Handle.(*heldJob)
	stale.leases.release(h.msg)
	require.NoError(t, h.msg.Nak()) // the lease ends now, not in 30s
	job = next(t, fresh)
	require.Equal(t, old.ID, job.ID)
	require.Equal(t, 2, job.Attempt)
	require.True(t, job.Redelivered, "an earlier attempt may have run")
	return old, job
}

// A host that stopped past its lease and comes back with the outcome of its
// attempt after a newer attempt ended the job: its outcome is not kept, and
// the job keeps the newer attempt's result.
func TestFence_LateOutcomeAfterTheEnd(t *testing.T) {
	t.Parallel()
	stale, b := setupSource(t)
	fresh := b.secondSource(t, "h2")
	b.publish(t, 1)
	old, job := takeFromStale(t, stale, fresh)

	now := time.Now()
	fresh.Done(job, broker.Outcome{Result: []byte(`"fresh"`), PID: 2, Started: now, Ended: now})
	done := b.state(t, job, wire.StatusSucceeded)
	require.JSONEq(t, `"fresh"`, string(done.Result))
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond)

	stale.Done(old, broker.Outcome{Err: "late failure", PID: 1, Started: now, Ended: now.Add(time.Second)})
	j := b.waitState(t, job.ID, func(j wire.Job) bool { return len(j.History) == 2 && j.History[0].Superseded })
	require.Equal(t, wire.StatusSucceeded, j.Status, "the end is kept")
	require.JSONEq(t, `"fresh"`, string(j.Result))
	require.Equal(t, 2, j.Attempts)
	require.True(t, j.History[0].Superseded, "the late attempt is recorded: %+v", j.History)
	require.Equal(t, "late failure", j.History[0].Error)
	require.Equal(t, "h1", j.History[0].Host)
	require.Equal(t, "h2", j.History[1].Host)
	require.Zero(t, b.pending(t))
}

// A host that comes back while a newer attempt still runs: its outcome is
// not kept, its message neither acked nor naked (which would take the job
// from the newer attempt or run it a third time), and the newer attempt's
// outcome is stored when it ends.
func TestFence_LateOutcomeWhileNewerRuns(t *testing.T) {
	t.Parallel()
	stale, b := setupSource(t)
	fresh := b.secondSource(t, "h2")
	b.publish(t, 1)
	old, job := takeFromStale(t, stale, fresh)

	running := b.waitState(t, job.ID, func(j wire.Job) bool { return j.Status == wire.StatusRunning })
	require.Equal(t, 2, running.Attempts)
	require.True(t, running.History[0].Lost, "the attempt that never reported is lost: %+v", running.History)

	now := time.Now()
	stale.Done(old, broker.Outcome{Result: []byte(`"stale"`), PID: 1, Started: now, Ended: now})
	j := b.waitState(t, job.ID, func(j wire.Job) bool { return len(j.History) == 2 && j.History[0].Superseded })
	require.Equal(t, wire.StatusRunning, j.Status, "the late success is not kept")
	require.Empty(t, j.Result)
	require.Equal(t, 1, b.pending(t), "the newer attempt still holds the job")

	fresh.Done(job, broker.Outcome{Err: "boom", Permanent: true, PID: 2, Started: now, Ended: now})
	dead := b.state(t, job, wire.StatusDead)
	require.Equal(t, "boom", dead.Error)
	require.Len(t, dead.History, 2)
	require.True(t, dead.History[0].Superseded)
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond)
}

// waitState watches job id's state until ok says it is the one wanted.
func (b *sourceBundle) waitState(t *testing.T, id string, ok func(wire.Job) bool) wire.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := b.kv.Watch(ctx, id)
	require.NoError(t, err)
	defer func() { _ = w.Stop() }()
	var j wire.Job
	for {
		select {
		case e := <-w.Updates():
			if e != nil && json.Unmarshal(e.Value(), &j) == nil && ok(j) {
				return j
			}
		case <-ctx.Done():
			t.Fatalf("job %s: never the state wanted; last: %+v", id, j)
		}
	}
}

// A job whose every attempt fails with an error of a megabyte still ends
// dead after max_attempts: errors are cut, so its state always fits the
// store (before, the history outgrew the server's largest message and the
// job was redelivered for ever).
func TestSource_HugeErrorsStillEnd(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	b.publish(t, 1)
	huge := strings.Repeat("e", 1<<20)
	now := time.Now()
	for attempt := 1; attempt <= 3; attempt++ {
		job := next(t, src)
		require.Equal(t, attempt, job.Attempt)
		src.Done(job, broker.Outcome{Crashed: true, Err: huge, Started: now, Ended: now})
		want := wire.StatusFailed
		if attempt == 3 {
			want = wire.StatusDead
		}
		st := b.state(t, job, want)
		require.LessOrEqual(t, len(st.Error), wire.MaxError)
		require.Contains(t, st.Error, "bytes cut]")
		for _, a := range st.History {
			require.LessOrEqual(t, len(a.Error), wire.MaxError)
		}
	}
}

// A host that comes back after the job's final state has left the bucket
// for conductord's archive: its late outcome is fenced against the
// archived state, not written as if the job had none. The archive here is
// conductord's part of the protocol played by the test: it keeps the
// final states of the ends stream and answers ArchiveGet.
func TestFence_LateOutcomeAfterTheStateWasArchived(t *testing.T) {
	t.Parallel()
	b, archived := bareBundle(t, time.Second)
	kv, js := b.kv, b.js
	ctx := context.Background()
	a, err := New(Config{Conn: b.nc, Host: "h1"})
	require.NoError(t, err)
	ttl, err := a.finalTTL(ctx, kv)
	require.NoError(t, err)
	require.Equal(t, time.Second, ttl, "read from the bucket's metadata")
	mk := func(host string) *source { return b.bareSource(t, host, ttl, nil) }
	stale, fresh := mk("h1"), mk("h2")
	b.publish(t, 1) // published straight to the stream: no state before its first write
	old, job := takeFromStale(t, stale, fresh)
	now := time.Now()
	fresh.Done(job, broker.Outcome{Result: []byte(`"fresh"`), Started: now, Ended: now})
	b.state(t, job, wire.StatusSucceeded)
	require.Eventually(t, func() bool {
		_, err := kv.Get(ctx, job.ID)
		return errors.Is(err, jetstream.ErrKeyNotFound) && archived(job.ID)
	}, 15*time.Second, 50*time.Millisecond, "the final state leaves the bucket for the archive")
	states, err := js.Stream(ctx, "KV_"+kv.Bucket())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := states.GetLastMsgForSubject(ctx, subject.KV(kv.Bucket(), job.ID))
		return errors.Is(err, jetstream.ErrMsgNotFound)
	}, 15*time.Second, 50*time.Millisecond, "the key's marker expires too: nothing is left of it")

	// The stale host's attempt began with its job's message: long enough
	// ago that a final state may have come and gone.
	old.Handle.(*heldJob).state.CreatedAt = now.Add(-time.Hour)
	stale.Done(old, broker.Outcome{Err: "late failure", Started: now, Ended: now})
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond,
		"the late delivery is acked: the job had ended")
	_, err = kv.Get(ctx, job.ID)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the late outcome was not written as if the job had no state")
}

// archiveStandIn keeps the final states of the ends stream, as conductord
// does, and answers ArchiveGet from them; it reports whether it has a job.
func archiveStandIn(t *testing.T, nc *nats.Conn, js jetstream.JetStream, space subject.Space) func(id string) bool {
	t.Helper()
	var mu sync.Mutex
	states := map[string][]byte{}
	cons, err := js.CreateOrUpdateConsumer(context.Background(), space.EndsStream(), jetstream.ConsumerConfig{Durable: "archive", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ends, err := wire.DecodeEnds(m.Data())
		require.NoError(t, err)
		mu.Lock()
		for _, e := range ends.Jobs {
			if e.Status.Final() {
				states[e.ID] = e.State
			}
		}
		mu.Unlock()
		_ = m.Ack()
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	sub, err := nc.Subscribe(space.ArchiveGet(), func(m *nats.Msg) {
		mu.Lock()
		state := states[string(m.Data)]
		mu.Unlock()
		r := nats.NewMsg(m.Reply)
		if state == nil {
			r.Header.Set(names.HeaderStatus, "404")
		}
		r.Data = state
		_ = m.RespondMsg(r)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		return states[id] != nil
	}
}

// A host whose write of an end landed but whose answer it never had (the
// store was slow, the answer lost) writes it again, finds the state moved
// on, and reads it: its own end, kept as its outcome, not recorded as
// superseded by itself.
func TestFence_OwnEndFromAWriteUnanswered(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	ctx := context.Background()
	at := time.Now().UTC()
	claim := wire.FirstClaim(0, 1, "me")
	h := &heldJob{holder: claim, seq: 1, tag: "me"}
	h.state = wire.Job{
		ID: "j1", Type: "sq", Status: wire.StatusSucceeded, Attempts: 1, Holder: claim.String(), Result: json.RawMessage(`"done"`),
		History: []wire.Attempt{{Attempt: 1, Host: "h1", StartedAt: at, EndedAt: at}},
	}
	data := encodeState(&h.state, nil)
	rev, err := b.kv.Create(ctx, "j1", data) // the write that landed, its answer lost
	require.NoError(t, err)

	f := &finishJob{held: h, data: data}
	v, ok := src.states.store(ctx, f, true)
	require.True(t, ok)
	require.Equal(t, fenceWrite, v, "its own end is its outcome")
	e, err := b.kv.Get(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, rev, e.Revision(), "nothing written over it")
	var j wire.Job
	require.NoError(t, json.Unmarshal(e.Value(), &j))
	require.Len(t, j.History, 1)
	require.False(t, j.History[0].Superseded)
}
