package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// publishAt queues one job of type sq at priority prio.
func (b *sourceBundle) publishAt(t *testing.T, prio wire.Priority, payload string) {
	t.Helper()
	_, err := b.js.Publish(context.Background(), b.space.JobAt("sq", string(prio)), []byte(payload))
	require.NoError(t, err)
}

// makePriorities makes sq's high and low consumers, as conductord's
// leader does once jobs of those priorities come: for the tests of a type
// that has had them.
func (b *sourceBundle) makePriorities(t *testing.T) {
	t.Helper()
	for _, p := range []wire.Priority{wire.PriorityHigh, wire.PriorityLow} {
		ok, err := hostsvc.MakePriority(context.Background(), b.js, b.space, "sq", p)
		require.NoError(t, err)
		require.True(t, ok, "sq has a normal consumer")
	}
}

// doneLong reports a job done as a long one (a second), so that the source
// prefetches nothing and each Next asks the server afresh.
func doneLong(src *source, job *broker.Job) {
	now := time.Now()
	src.Done(job, broker.Outcome{Result: []byte("1"), Started: now.Add(-time.Second), Ended: now})
}

// waiting is the number of pull requests the server holds for the
// consumer of sq jobs of priority prio.
func (b *sourceBundle) waiting(t *testing.T, prio wire.Priority) int {
	t.Helper()
	c, err := b.js.Consumer(context.Background(), b.space.JobStream(), b.space.ConsumerAt("sq", string(prio)))
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	return info.NumWaiting
}

func TestSource_PrioritiesRunHighestFirst(t *testing.T) {
	t.Parallel()
	src, b := setupSourceWith(t, true)
	for _, p := range []wire.Priority{wire.PriorityLow, wire.PriorityNormal, wire.PriorityHigh} {
		for i := range 3 {
			b.publishAt(t, p, fmt.Sprintf(`"%s-%d"`, p, i))
		}
	}
	var got []string
	for range 9 {
		job := next(t, src)
		got = append(got, string(job.Payload))
		doneLong(src, job)
		if len(got) == 1 {
			require.Equal(t, wire.PriorityHigh, b.state(t, job, wire.StatusSucceeded).Priority)
		}
	}
	require.Equal(t, []string{
		`"high-0"`, `"high-1"`, `"high-2"`,
		`"normal-0"`, `"normal-1"`, `"normal-2"`,
		`"low-0"`, `"low-1"`, `"low-2"`,
	}, got)
}

// TestSource_HighJobPassesBacklog: a high job queued behind a backlog of
// normal ones runs next, or within emptyFor, not after the backlog.
func TestSource_HighJobPassesBacklog(t *testing.T) {
	t.Parallel()
	src, b := setupSourceWith(t, true)
	const backlog = 300
	b.publish(t, backlog)
	doneLong(src, next(t, src))

	b.publishAt(t, wire.PriorityHigh, `"urgent"`)
	queued := time.Now()
	const behind = backlog - 1 // the normal jobs queued ahead of it
	var drained time.Duration  // how long they took, if all ran first
	for n := 1; ; n++ {
		job := next(t, src)
		doneLong(src, job)
		if string(job.Payload) == `"urgent"` {
			t.Logf("high job ran after %d normal jobs, %s after it was queued", n-1, time.Since(queued))
			// Behind every one of them only if they ran out before the
			// high level was due to be asked again.
			require.True(t, n-1 < behind || drained < 2*emptyFor,
				"the high job waited for the whole backlog, which took %s", drained)
			return
		}
		if n == behind {
			drained = time.Since(queued)
		}
		require.LessOrEqual(t, n, behind)
	}
}

// TestSource_PriorityConsumerFoundLater: a type with no high consumer
// (no high job yet) polls its normal one alone while a worker waits; once
// a high job comes and its consumer is made (conductord's leader does it
// then), the waiting worker gets it, within absentFor and the time of a
// probe, without the normal consumer's poll ending first.
func TestSource_PriorityConsumerFoundLater(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	got := make(chan *broker.Job, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		job, _ := src.Next(ctx)
		got <- job
	}()
	require.Eventually(t, func() bool { return b.waiting(t, wire.PriorityNormal) == 1 }, 10*time.Second, 5*time.Millisecond,
		"an idle worker polls the normal priority")

	b.publishAt(t, wire.PriorityHigh, `"first high"`)
	queued := time.Now()
	ok, err := hostsvc.MakePriority(context.Background(), b.js, b.space, "sq", wire.PriorityHigh)
	require.NoError(t, err)
	require.True(t, ok)
	job := <-got
	require.NotNil(t, job, "the high job never reached the waiting worker")
	require.Equal(t, `"first high"`, string(job.Payload))
	t.Logf("the high job came %s after it was queued", time.Since(queued))
	require.Less(t, time.Since(queued), absentFor+probeWait+time.Second)
	doneLong(src, job)
	_, err = b.js.Consumer(context.Background(), b.space.JobStream(), b.space.ConsumerAt("sq", "low"))
	require.ErrorIs(t, err, jetstream.ErrConsumerNotFound, "no low job came: no low consumer")
}

// TestSource_WithdrawsPollsWhenNoWorkerWaits: a worker waiting on an empty
// queue polls every priority; once it has a job, the polls are withdrawn,
// so that the next job goes to a host with a free worker, not to this one.
func TestSource_WithdrawsPollsWhenNoWorkerWaits(t *testing.T) {
	t.Parallel()
	src, b := setupSourceWith(t, true)
	got := make(chan *broker.Job, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		job, _ := src.Next(ctx)
		got <- job
	}()
	require.Eventually(t, func() bool {
		return b.waiting(t, wire.PriorityHigh) == 1 && b.waiting(t, wire.PriorityNormal) == 1 && b.waiting(t, wire.PriorityLow) == 1
	}, 10*time.Second, 5*time.Millisecond, "an idle worker polls every priority")

	b.publishAt(t, wire.PriorityLow, `"low"`)
	job := <-got
	require.NotNil(t, job)
	require.Equal(t, `"low"`, string(job.Payload))
	require.Eventually(t, func() bool {
		return b.waiting(t, wire.PriorityHigh) == 0 && b.waiting(t, wire.PriorityNormal) == 0 && b.waiting(t, wire.PriorityLow) == 0
	}, 10*time.Second, 5*time.Millisecond, "polls left while no worker waits")
	doneLong(src, job)
}

// TestSource_TrickleOfShortJobs: jobs queued one at a time, each taken
// at once, never wait for a poll to expire (the polls of the priorities
// that brought nothing must not stand for the one that brought them all).
func TestSource_TrickleOfShortJobs(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	for i := range 300 {
		_, err := b.js.Publish(context.Background(), b.space.Job("sq"), []byte(strconv.Itoa(i)))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		job, err := src.Next(ctx) // within 3s: before the polls expire (5s)
		cancel()
		require.NoError(t, err, "job %d", i)
		now := time.Now()
		src.Done(job, broker.Outcome{Result: []byte("1"), Started: now.Add(-time.Millisecond), Ended: now})
	}
}

// BenchmarkSource_HighBehindBacklog measures how long a high job queued
// behind a backlog of normal ones waits while one worker keeps taking short
// jobs (so the source prefetches): from its publish to its Next, and how
// many normal jobs ran meanwhile.
func BenchmarkSource_HighBehindBacklog(b *testing.B) {
	src, bb := setupSource(b)
	ctx := context.Background()
	publish := func(subj string, n int) {
		for range n {
			if _, err := bb.js.PublishAsync(subj, []byte("1")); err != nil {
				b.Fatal(err)
			}
		}
		<-bb.js.PublishAsyncComplete()
	}
	normal, high := bb.space.Job("sq"), bb.space.JobAt("sq", "high")
	publish(normal, 20_000)
	take := func() *broker.Job {
		job, err := src.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		src.Done(job, broker.Outcome{Result: []byte("1"), Started: now.Add(-time.Millisecond), Ended: now})
		return job
	}
	for range 100 { // the source learns that jobs are short, and prefetches
		take()
	}
	var waits []time.Duration
	passed := 0
	b.ResetTimer()
	for range b.N {
		if _, err := bb.js.Publish(ctx, high, []byte(`"urgent"`)); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for string(take().Payload) != `"urgent"` {
			passed++
		}
		waits = append(waits, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(waits)
	b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(passed)/float64(b.N), "normal_jobs_before")
}

// TestSource_CloseCountsNoAttempt: the jobs a source holds ahead when it
// closes (a workerd restart) go back to the queue with the delivery
// counted as skipped, so that the next host runs them as attempt 1.
func TestSource_CloseCountsNoAttempt(t *testing.T) {
	t.Parallel()
	idle, b := setupSource(t) // asks for nothing: no worker waits on it
	src, err := newSource(idle.sourceConfig)
	require.NoError(t, err)
	b.publish(t, 40)
	now := time.Now()
	job := next(t, src)
	src.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now.Add(time.Millisecond)})
	job = next(t, src)
	require.Eventually(t, func() bool { return b.pending(t) == 17 }, 10*time.Second, 5*time.Millisecond, "prefetched")
	src.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now.Add(time.Millisecond)})
	src.close()

	other, err := newSource(idle.sourceConfig)
	require.NoError(t, err)
	t.Cleanup(other.close)
	job = next(t, other)
	require.Equal(t, 1, job.Attempt, "job %s: its delivery to the closed source is no attempt", job.ID)
	other.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now.Add(time.Millisecond)})
}

// TestFetcher_RetiredInboxKeptThroughAnImport: through a host account's
// import (an API prefix of its own), a renewed inbox with requests
// outstanding stays subscribed until their deadline, and a job that
// comes to it then is delivered, not dropped; once the deadline has
// passed it is drained. Without an import it is drained at once.
func TestFetcher_RetiredInboxKeptThroughAnImport(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	space, _ := subject.New("default")
	for _, api := range []string{"JS.conductor.API", "$JS.API"} {
		delivered := make(chan *nats.Msg, 1)
		f, err := newFetcher(fetcherConfig{
			nc: nc, api: api, space: space, typ: "sq", expires: time.Second, buffer: 8,
			log:     slog.New(slog.NewTextHandler(t.Output(), nil)),
			demand:  func() (int, int, int) { return 0, 0, 0 },
			deliver: func(m *nats.Msg) { delivered <- m },
		})
		require.NoError(t, err)
		l := f.levels[0]
		old, oldSub := l.inbox, l.sub
		l.reqs = []pullRequest{{n: 5, deadline: time.Now().Add(time.Hour)}}
		require.NoError(t, f.newInbox(l))
		if api == "$JS.API" {
			require.Empty(t, l.retired, "without an import the old inbox is drained at once")
			f.close()
			continue
		}
		require.Len(t, l.retired, 1)
		require.True(t, oldSub.IsValid(), "the old inbox is still subscribed")
		require.NoError(t, nc.Publish(old+".1", []byte("a late job"))) // a job comes to its request's reply subject
		d := <-f.msgs
		require.Equal(t, old, d.inbox)
		// as its consumer delivers it (this connection may not publish so)
		d.m.Reply = "$JS.ACK." + space.JobStream() + "." + space.ConsumerAt("sq", string(l.prio)) + ".1.7.7.0.0"
		refused, gone := f.received(d)
		require.False(t, refused || gone)
		require.Equal(t, "a late job", string((<-delivered).Data))
		require.Equal(t, time.Time{}, f.drainRetired(time.Now().Add(2*time.Hour)), "none left")
		require.Eventually(t, func() bool { return !oldSub.IsValid() }, 5*time.Second, 5*time.Millisecond, "drained after its deadline")
		f.close()
	}
}

// TestFetcher_StatusCountsAgainstItsRequest: the server answers a probe
// at once ("408 Requests Pending", "404 No Messages") while an older one
// still waits for its jobs; the answer ends the newer request, not the
// older (which, counted as ended, left the newer's credit standing for
// its whole deadline: a pool of 100 stalled 2s at the end of
// BenchmarkJobTypes), and jobs still count against the oldest.
func TestFetcher_StatusCountsAgainstItsRequest(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	space, _ := subject.New("default")
	f, err := newFetcher(fetcherConfig{
		nc: nc, space: space, typ: "sq", expires: time.Second, buffer: 16,
		log:     slog.New(slog.NewTextHandler(t.Output(), nil)),
		demand:  func() (int, int, int) { return 0, 0, 0 },
		deliver: func(*nats.Msg) {},
	})
	require.NoError(t, err)
	t.Cleanup(func() { f.close() })
	l := f.levels[1]
	require.Equal(t, wire.PriorityNormal, l.prio)
	now := time.Now()
	require.NoError(t, f.pull(l, 20, false, now))  // older: waits for its jobs
	require.NoError(t, f.pull(l, 458, false, now)) // newer: answered at once
	status := func(id, code, desc string) delivery {
		m := nats.NewMsg(l.inbox + "." + id)
		m.Header.Set(names.HeaderNATSStatus, code)
		m.Header.Set(names.HeaderNATSDescription, desc)
		return delivery{lvl: l, inbox: l.inbox, id: id, m: m}
	}
	f.received(status(l.reqs[1].id, "408", "Requests Pending"))
	require.Equal(t, 20, l.credit, "the newer request ended; the older still waits")
	require.Len(t, l.reqs, 1)

	f.received(delivery{lvl: l, inbox: l.inbox, m: &nats.Msg{Subject: space.Job("sq"), Reply: "$JS.ACK." + space.JobStream() + "." + space.Consumer("sq") + ".1.7.7.0.0", Data: []byte("1")}})
	require.Equal(t, 19, l.credit, "a job is the oldest request's")

	f.received(status("zz", "404", "No Messages"))
	require.Equal(t, 19, l.credit, "a status of no request outstanding changes nothing")
	f.received(status(l.reqs[0].id, "404", "No Messages"))
	require.Zero(t, l.credit)
	require.Empty(t, l.reqs)
}
