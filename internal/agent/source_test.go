package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
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

type sourceBundle struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	jsAgent jetstream.JetStream // the agent's, for more sources
	space   subject.Space
	kv      jetstream.KeyValue
}

func setupSource(t testing.TB) (*source, *sourceBundle) {
	t.Helper()
	return setupSourceWith(t, false)
}

// setupSourceWith is setupSource, with sq's high and low consumers made
// before the source starts if priorities: a type that has had such jobs.
func setupSourceWith(t testing.TB, priorities bool) (*source, *sourceBundle) {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, _ := subject.New("default")
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: space.JobStream(), Subjects: []string{space.Jobs()}, Retention: jetstream.WorkQueuePolicy,
	})
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: space.StateBucket()})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: space.EndsStream(), Subjects: []string{space.AllJobEnds()}})
	require.NoError(t, err)
	serveHosts(t, nc, js, space)

	a, err := New(Config{Conn: nc, Host: "h1"})
	require.NoError(t, err)
	require.NoError(t, a.ensureConsumer(ctx, "sq"))
	if priorities {
		for _, p := range []wire.Priority{wire.PriorityHigh, wire.PriorityLow} {
			ok, err := hostsvc.MakePriority(ctx, js, space, "sq", p)
			require.NoError(t, err)
			require.True(t, ok)
		}
	}
	src, err := newSource(sourceConfig{
		nc: nc, js: a.js, kv: kv, space: space, typ: "sq", host: "h1", workers: 2, prefetch: 8, maxAttempts: 3, maxResult: 1 << 20,
		expires: 5 * time.Second, ackWait: 30 * time.Second, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		svc: a.svc,
	})
	require.NoError(t, err)
	t.Cleanup(src.close)
	return src, &sourceBundle{nc: nc, js: js, jsAgent: a.js, space: space, kv: kv}
}

// A pool whose consumers were removed (conductord removes those of a type
// no host served for a while) asks for them again at its next pull, and
// takes the jobs queued meanwhile.
func TestSource_ConsumersRemadeWhenGone(t *testing.T) {
	t.Parallel()
	src, b := setupSourceWith(t, true)
	ctx := context.Background()
	b.publish(t, 1)
	job := next(t, src)
	now := time.Now()
	src.Done(job, broker.Outcome{Result: []byte("0"), Started: now, Ended: now})
	b.state(t, job, wire.StatusSucceeded)

	stream, err := b.js.Stream(ctx, b.space.JobStream())
	require.NoError(t, err)
	for _, p := range wire.Priorities {
		require.NoError(t, stream.DeleteConsumer(ctx, b.space.ConsumerAt("sq", string(p))))
	}
	_, err = b.js.Publish(ctx, b.space.Job("sq"), []byte("41"))
	require.NoError(t, err)
	job = next(t, src)
	require.Equal(t, "41", string(job.Payload), "the job queued while the consumers were gone")
	_, err = stream.Consumer(ctx, b.space.Consumer("sq"))
	require.NoError(t, err, "the normal consumer made again")
	for _, p := range []wire.Priority{wire.PriorityHigh, wire.PriorityLow} {
		_, err := stream.Consumer(ctx, b.space.ConsumerAt("sq", string(p)))
		require.ErrorIs(t, err, jetstream.ErrConsumerNotFound, "%s made again with none of its jobs queued", p)
	}
}

func TestSource_NextDeliversAtOnce(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	ctx := context.Background()
	for i := range 5 {
		_, err := b.js.Publish(ctx, b.space.Job("sq"), []byte{'0' + byte(i)})
		require.NoError(t, err)
	}
	for i := range 5 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		job, err := src.Next(ctx)
		cancel()
		require.NoError(t, err, "job %d", i)
		t.Logf("job %d after %s", i, time.Since(start))
		require.Equal(t, string([]byte{'0' + byte(i)}), string(job.Payload))
		src.Done(job, broker.Outcome{Result: []byte("1"), Ended: time.Now()})
	}
}

// TestHandout_RedeliveryNotQueuedBehindAnother: a job that reached a
// worker queued behind another, whose worker crashed before its answers
// were written, came back as never started; delivered again, it is not
// queued behind a running job (a take with a payload bound), only handed
// to an idle worker, so that if it crashes its worker again the crash is
// its own.
func TestHandout_RedeliveryNotQueuedBehindAnother(t *testing.T) {
	t.Parallel()
	o := newHandout(func(*nats.Msg) int { return 0 })
	ack := func(delivered int) string {
		return fmt.Sprintf("$JS.ACK.conductor-default-jobs.pool-sq.%d.7.7.1700000000000000000.0", delivered)
	}
	sub := new(nats.Subscription) // a message's metadata is read only of one delivered
	first := &nats.Msg{Subject: "conductor.default.jobs.sq", Reply: ack(1), Data: []byte("1"), Sub: sub}
	again := &nats.Msg{Subject: "conductor.default.jobs.sq", Reply: ack(2), Data: []byte("2"), Sub: sub}
	require.True(t, o.deliver(first))
	require.True(t, o.deliver(again))
	require.Same(t, first, o.tryTake(4096), "a first delivery is queued behind another")
	require.Nil(t, o.tryTake(4096), "a job delivered before is queued behind another")
	require.Same(t, again, o.tryTake(-1), "an idle worker takes it")
}

// publish queues n jobs with payloads 0..n-1.
func (b *sourceBundle) publish(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		_, err := b.js.Publish(context.Background(), b.space.Job("sq"), []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
}

// pending is the number of jobs delivered to the source and not acked.
func (b *sourceBundle) pending(t *testing.T) int {
	t.Helper()
	c, err := b.js.Consumer(context.Background(), b.space.JobStream(), b.space.Consumer("sq"))
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	return info.NumAckPending
}

func next(t *testing.T, src *source) *broker.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	job, err := src.Next(ctx)
	require.NoError(t, err)
	return job
}

// state reads the stored state of a job, waiting until its attempt has
// status want: it watches the job's key, so that every write is seen.
func (b *sourceBundle) state(t *testing.T, job *broker.Job, want wire.Status) wire.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := b.kv.Watch(ctx, job.ID)
	require.NoError(t, err)
	defer func() { _ = w.Stop() }()
	var j wire.Job
	for {
		select {
		case e := <-w.Updates():
			if e != nil && json.Unmarshal(e.Value(), &j) == nil && j.Status == want && j.Attempts == job.Attempt {
				return j
			}
		case <-ctx.Done():
			t.Fatalf("job %s attempt %d never %s (last: %s attempt %d)", job.ID, job.Attempt, want, j.Status, j.Attempts)
		}
	}
}

func TestSource_LongJobsAreNotPrefetched(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	b.publish(t, 10)

	// Until jobs are known to be short, the host holds only what its
	// waiting workers take.
	job := next(t, src)
	require.Equal(t, 1, b.pending(t))
	start := time.Now()
	src.Done(job, broker.Outcome{Result: []byte("1"), Started: start.Add(-time.Second), Ended: start})
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond)

	job = next(t, src)
	require.Equal(t, 1, b.pending(t), "a pool of long jobs prefetches nothing")
	src.Done(job, broker.Outcome{Result: []byte("1"), Started: start.Add(-time.Second), Ended: start})
}

// Short jobs are held ahead; how many, the pool's run time says (see
// TestSource_HoldBounds).
func TestSource_ShortJobsArePrefetched(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		run  time.Duration
		want int // jobs pending: those held, and the job being run
	}{
		{time.Millisecond, 2*8 + 1},     // 2 workers x prefetch 8
		{15 * time.Millisecond, 13 + 1}, // 2 workers run 13 jobs of 15ms in 100ms
	} {
		t.Run(tc.run.String(), func(t *testing.T) {
			t.Parallel()
			src, b := setupSource(t)
			b.publish(t, 40)

			now := time.Now()
			job := next(t, src)
			src.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now.Add(tc.run)})
			job = next(t, src)
			require.Eventually(t, func() bool { return b.pending(t) == tc.want }, 10*time.Second, 5*time.Millisecond,
				"pending %d", b.pending(t))
			src.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now.Add(tc.run)})
		})
	}
}

func TestSource_Outcomes(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	b.publish(t, 1)
	now := time.Now()

	// A crash is retried at once and counted as an attempt.
	job := next(t, src)
	require.Equal(t, 1, job.Attempt)
	src.Done(job, broker.Outcome{Crashed: true, Err: "worker exited: signal: killed", PID: 42, Started: now, Ended: now})
	failed := b.state(t, job, wire.StatusFailed)
	require.Equal(t, "worker exited: signal: killed", failed.Error)
	require.Len(t, failed.History, 1)
	require.Equal(t, 42, failed.History[0].PID)

	job = next(t, src)
	require.Equal(t, 2, job.Attempt)
	src.Done(job, broker.Outcome{Err: "boom", Started: now, Ended: now})
	failed = b.state(t, job, wire.StatusFailed)
	require.Len(t, failed.History, 2, "the history of earlier attempts is kept")
	require.Equal(t, "boom", failed.History[1].Error)

	// The third attempt comes after a backoff of about a second, and its
	// failure is the last: the job is dead, its payload kept.
	job = next(t, src)
	require.Equal(t, 3, job.Attempt)
	src.Done(job, broker.Outcome{Err: "boom again", Started: now, Ended: now})
	dead := b.state(t, job, wire.StatusDead)
	require.Equal(t, "0", string(dead.Payload))
	require.Equal(t, 3, dead.Attempts)
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestSource_ResultOverLimitIsPermanent(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	src.maxResult = 4
	b.publish(t, 1)
	job := next(t, src)
	now := time.Now()
	src.Done(job, broker.Outcome{Result: []byte(`"too long"`), Started: now, Ended: now})
	dead := b.state(t, job, wire.StatusDead)
	require.Contains(t, dead.Error, "over the limit of 4 bytes")
}

func TestSource_RunningStateOfLongJob(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	b.publish(t, 1)
	job := next(t, src)
	running := b.state(t, job, wire.StatusRunning)
	require.Equal(t, "h1", running.History[0].Host)
	now := time.Now()
	src.Done(job, broker.Outcome{Result: []byte("0"), Started: now, Ended: now})
	b.state(t, job, wire.StatusSucceeded)
}

func TestSource_BadIDHeaderFallsBackToSequence(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	m := nats.NewMsg(b.space.Job("sq"))
	m.Header.Set(names.HeaderJobID, "a b")
	m.Data = []byte("1")
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)

	job := next(t, src)
	require.Equal(t, "seq-1", job.ID)
	now := time.Now()
	src.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now})
	b.state(t, job, wire.StatusSucceeded)
}

func TestSource_NotStartedIsNoAttempt(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	b.publish(t, 1)

	job := next(t, src)
	require.Equal(t, 1, job.Attempt)
	for range 2 {
		src.Done(job, broker.Outcome{NotStarted: true, Err: "worker busy"})
		again := next(t, src)
		require.Equal(t, job.ID, again.ID)
		require.Equal(t, 1, again.Attempt, "a delivery that reached no worker is no attempt")
		job = again
	}
	e, err := b.kv.Get(context.Background(), job.ID)
	require.NoError(t, err)
	var claimed wire.Job
	require.NoError(t, json.Unmarshal(e.Value(), &claimed))
	require.Equal(t, wire.StatusRunning, claimed.Status, "a redelivery claims the state before it runs")
	require.Equal(t, 2, claimed.Skipped)
	require.Equal(t, 1, claimed.Attempts)
	require.Len(t, claimed.History, 1, "the deliveries put back left no attempt")

	now := time.Now()
	src.Done(job, broker.Outcome{Err: "boom", Started: now, Ended: now})
	failed := b.state(t, job, wire.StatusFailed)
	require.Equal(t, 1, failed.Attempts)
	require.Equal(t, 2, failed.Skipped)
	job = next(t, src) // after the retry's backoff
	require.Equal(t, 2, job.Attempt, "the skipped deliveries still do not count")
	src.Done(job, broker.Outcome{Result: []byte("0"), Started: now, Ended: now})
	done := b.state(t, job, wire.StatusSucceeded)
	require.Len(t, done.History, 2)
}

// A payload that is not JSON goes to the worker as it is: a framed one
// takes it, one that reads payloads in the line refuses it through the
// broker, permanently. Either way a dead state keeps it as a JSON string.
func TestSource_PayloadNotJSONIsKeptAsAString(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	m := nats.NewMsg(b.space.Job("sq"))
	m.Header.Set(names.HeaderJobID, "bad-payload")
	m.Data = []byte("{not json")
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)

	job := next(t, src)
	require.Equal(t, "bad-payload", job.ID)
	require.Equal(t, "{not json", string(job.Payload), "not looked at")
	now := time.Now()
	src.Done(job, broker.Outcome{Err: "payload is not valid JSON", Permanent: true, Started: now, Ended: now})

	dead := b.state(t, job, wire.StatusDead)
	require.Contains(t, dead.Error, "payload is not valid JSON")
	require.JSONEq(t, `"{not json"`, string(dead.Payload), "kept as a string")
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestSource_RunningStateKeepsHistory(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	b.publish(t, 1)
	now := time.Now()
	job := next(t, src)
	src.Done(job, broker.Outcome{Crashed: true, Err: "worker exited: signal: killed", Started: now, Ended: now})
	b.state(t, job, wire.StatusFailed)

	job = next(t, src)
	require.Equal(t, 2, job.Attempt)
	running := b.state(t, job, wire.StatusRunning) // a long second attempt
	require.Len(t, running.History, 2)
	require.Equal(t, "worker exited: signal: killed", running.History[0].Error)
	src.Done(job, broker.Outcome{Result: []byte("0"), Started: now, Ended: time.Now()})
	done := b.state(t, job, wire.StatusSucceeded)
	require.Len(t, done.History, 2, "the running state's write does not hide the first attempt")
	require.Equal(t, []int{1, 2}, []int{done.History[0].Attempt, done.History[1].Attempt})
}

func TestSource_PoisonJobIsQuarantined(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	src.setLimits(10, 2)
	b.publish(t, 1)
	now := time.Now()
	job := next(t, src)
	src.Done(job, broker.Outcome{Crashed: true, Err: "worker exited: signal: killed", Started: now, Ended: now})
	b.state(t, job, wire.StatusFailed)
	job = next(t, src)
	src.Done(job, broker.Outcome{Err: "boom", Started: now, Ended: now}) // a failure, not a crash
	b.state(t, job, wire.StatusFailed)
	job = next(t, src)
	src.Done(job, broker.Outcome{Crashed: true, Err: "worker exited: exit status 2", Started: now, Ended: now})
	dead := b.state(t, job, wire.StatusDead)
	require.Equal(t, "poison job: its worker died in 2 of its attempts (last: worker exited: exit status 2)", dead.Error)
	require.Equal(t, "0", string(dead.Payload))
	require.Equal(t, []bool{true, false, true}, []bool{dead.History[0].Crashed, dead.History[1].Crashed, dead.History[2].Crashed})
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond, "acked, not retried")
}

func TestSource_MaxAttemptsHeader(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	m := nats.NewMsg(b.space.Job("sq"))
	m.Header.Set(names.HeaderMaxAttempts, "1")
	m.Data = []byte("1")
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	job := next(t, src)
	now := time.Now()
	src.Done(job, broker.Outcome{Err: "boom", Started: now, Ended: now})
	require.Equal(t, "boom", b.state(t, job, wire.StatusDead).Error, "one attempt allowed, not the pool's 3")
}

func TestSource_JobGoesToTheLeastLoadedWorker(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	got := make(chan int64, 3)
	waiting := make(chan struct{})
	src.out.testWaiting = func(n int) {
		if n == 3 {
			close(waiting)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, load := range []int64{300 << 20, 100 << 20, 200 << 20} {
		wg.Go(func() {
			if _, err := src.Next(broker.WithWorkerLoad(ctx, load)); err == nil {
				got <- load
			}
		})
	}
	<-waiting
	b.publish(t, 1)
	select {
	case load := <-got:
		require.Equal(t, int64(100<<20), load, "the idle worker with the least memory gets the job")
	case <-time.After(10 * time.Second):
		t.Fatal("no worker got the job")
	}
	cancel()
	wg.Wait()
}

func TestSource_DelayedJobWaitsItsTime(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	notBefore := time.Now().Add(400 * time.Millisecond)
	m := nats.NewMsg(b.space.Job("sq"))
	m.Header.Set(names.HeaderNotBefore, notBefore.UTC().Format(time.RFC3339Nano))
	m.Data = []byte("1")
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	job := next(t, src)
	require.False(t, time.Now().Before(notBefore), "given to a worker before its time")
	require.Equal(t, 1, job.Attempt, "the early delivery is no attempt")
	now := time.Now()
	src.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now})
	done := b.state(t, job, wire.StatusSucceeded)
	require.Equal(t, 1, done.Skipped)
}

// Outcomes that end together are stored, acked and announced in bursts (here
// more than maxBurst at once); every one of them gets its state, its ack
// and its event, in order, and is in a wire.Ends after its event.
func TestSource_OutcomesInBursts(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	const n = maxBurst + 44
	events := make(chan string, n)
	sub, err := b.nc.Subscribe(b.space.JobEvent("sq", string(wire.StatusSucceeded)), func(m *nats.Msg) {
		events <- m.Header.Get(names.HeaderJobID)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// The events and the ends, in the order they arrive on one connection.
	var (
		mu       sync.Mutex
		order    []string // "event <id>" and "end <id>"
		endMsgs  int
		complete = make(chan struct{}) // closed once order has every job's two
	)
	note := func(o string) {
		order = append(order, o)
		if len(order) == 2*n {
			close(complete)
		}
	}
	all, err := b.nc.Subscribe(subject.Root+".>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch m.Subject {
		case b.space.JobEvent("sq", string(wire.StatusSucceeded)):
			note("event " + m.Header.Get(names.HeaderJobID))
		case b.space.JobEnds("sq"):
			var ends wire.Ends
			if err := json.Unmarshal(m.Data, &ends); err != nil || ends.Type != "sq" {
				t.Errorf("bad ends %q: %v", m.Data, err)
				return
			}
			endMsgs++
			for _, e := range ends.Jobs {
				if e.Status != wire.StatusSucceeded {
					t.Errorf("job %s ended %s", e.ID, e.Status)
				}
				note("end " + e.ID)
			}
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = all.Unsubscribe() })
	require.NoError(t, b.nc.Flush())
	b.publish(t, n)

	now := time.Now()
	var ids []string
	var jobs []*broker.Job
	for range n {
		job := next(t, src)
		ids = append(ids, job.ID)
		jobs = append(jobs, job)
	}
	for _, job := range jobs {
		src.Done(job, broker.Outcome{Result: []byte("1"), Started: now, Ended: now.Add(time.Millisecond)})
	}
	for _, id := range ids {
		select {
		case got := <-events:
			require.Equal(t, id, got, "events out of order")
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for job %s", id)
		}
	}
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond, "jobs left unacked")
	select {
	case <-complete:
	case <-time.After(10 * time.Second):
		t.Fatal("the ends of some jobs were not announced")
	}
	mu.Lock()
	seen := map[string]bool{}
	for _, o := range order {
		kind, id, _ := strings.Cut(o, " ")
		if kind == "event" {
			// The end is announced, durably, before the job is acked; the
			// event after.
			require.True(t, seen[id], "job %s's event came before its end", id)
		}
		seen[id] = true
	}
	require.Less(t, endMsgs, n/2, "the ends are not announced in bursts")
	mu.Unlock()
	for _, id := range []string{ids[0], ids[n-1]} {
		e, err := b.kv.Get(context.Background(), id)
		require.NoError(t, err)
		var st wire.Job
		require.NoError(t, json.Unmarshal(e.Value(), &st))
		require.Equal(t, wire.StatusSucceeded, st.Status, id)
	}
}

// TestDeliveredBefore: the delivery count of both forms of ack subject,
// read as Msg.Metadata reads it.
func TestDeliveredBefore(t *testing.T) {
	t.Parallel()
	sub := new(nats.Subscription)
	for _, reply := range []string{
		"$JS.ACK.S.C.1.7.7.1700000000000000000.0",
		"$JS.ACK.S.C.2.7.7.1700000000000000000.0",
		"$JS.ACK.S.C.10.7.7.1700000000000000000.0",
		"$JS.ACK.dom.hash.S.C.1.7.7.1700000000000000000.0.rnd",
		"$JS.ACK.dom.hash.S.C.3.7.7.1700000000000000000.0.rnd",
		"$JS.ACK.dom.hash.S.C.3.7.7.1700000000000000000.0",
		"$JS.ACK.S.C.x.7.7.1.0",
		"_INBOX.x",
	} {
		m := &nats.Msg{Reply: reply, Sub: sub}
		md, err := m.Metadata()
		want := err == nil && md.NumDelivered > 1
		require.Equal(t, want, deliveredBefore(m), reply)
	}
}
