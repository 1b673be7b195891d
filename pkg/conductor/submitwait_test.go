package conductor

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// TestConductor_SubmitWaitAnsweredFromTheEnd: a submission that waits is
// answered with the final state its job's end carries, with no read of
// the job's state, neither before the job runs nor after it ends; an end
// whose state the waits may not take (another type's, or a host's that
// the store did not write) makes the wait read the store, and answer
// what it keeps. The test plays the host: it takes the job's message,
// stores its final state, then announces its end.
func TestConductor_SubmitWaitAnsweredFromTheEnd(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	states, err := js.KeyValue(ctx, c.space.StateBucket())
	require.NoError(t, err)
	// Every read of a job state, as the server is asked it: each comes to
	// the spy before the server answers it.
	spy, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(spy.Close)
	reads, err := spy.SubscribeSync("$JS.API.DIRECT.GET.*." + subject.KV(c.space.StateBucket(), ">"))
	require.NoError(t, err)
	jobs, err := nc.SubscribeSync(c.space.JobAt("squares", ""))
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	require.NoError(t, spy.Flush())

	const stored = 49
	for _, tc := range []struct {
		name  string
		subj  string // where the end is announced
		state func(id string) []byte
		read  bool // whether the wait reads the state
	}{
		{"the end's state", c.space.JobEnds("squares"), nil, false},
		{"another type's state", c.space.JobEnds("squares"), func(id string) []byte {
			return []byte(`{"id":"` + id + `","type":"other","status":"succeeded","attempts":1,"result":666}`)
		}, true},
		{"a host's state the store did not write", c.space.EndsAs("h1", "squares"), func(id string) []byte {
			return []byte(`{"id":"` + id + `","type":"squares","status":"succeeded","attempts":1,"result":666}`)
		}, true},
	} {
		answers := make(chan *nats.Msg, 1)
		go func() {
			m := nats.NewMsg(c.space.Submit("squares"))
			m.Header.Set(names.HeaderWait, "10s")
			m.Data = []byte("7")
			a, err := nc.RequestMsg(m, 15*time.Second)
			if err != nil {
				t.Error(err)
			}
			answers <- a
		}()
		job, err := jobs.NextMsg(10 * time.Second)
		require.NoError(t, err, tc.name)
		id := job.Header.Get(names.HeaderJobID)
		rev, err := strconv.ParseUint(job.Header.Get(names.HeaderStateRev), 10, 64)
		require.NoError(t, err, tc.name)
		require.NoError(t, spy.Flush())
		before, _, err := reads.Pending()
		require.NoError(t, err)

		final, err := json.Marshal(wire.Job{ID: id, Type: "squares", Status: wire.StatusSucceeded, Attempts: 1, Result: json.RawMessage(strconv.Itoa(stored))})
		require.NoError(t, err)
		_, err = states.Update(ctx, id, final, rev)
		require.NoError(t, err, tc.name)
		end := wire.End{ID: id, Status: wire.StatusSucceeded, State: final}
		if tc.state != nil {
			end.State = tc.state(id)
		}
		ends := wire.Ends{Type: "squares", Jobs: []wire.End{end}}
		require.NoError(t, nc.Publish(tc.subj, ends.AppendJSON(nil)), tc.name)

		var a *nats.Msg
		select {
		case a = <-answers:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no answer", tc.name)
		}
		require.NotNil(t, a, tc.name)
		require.Equal(t, strconv.Itoa(http.StatusOK), a.Header.Get(names.HeaderStatus), "%s: %s", tc.name, a.Data)
		var j wire.Job
		require.NoError(t, json.Unmarshal(a.Data, &j))
		require.Equal(t, id, j.ID, tc.name)
		require.JSONEq(t, strconv.Itoa(stored), string(j.Result), "%s: the answer is the stored state", tc.name)
		require.NoError(t, spy.Flush())
		after, _, err := reads.Pending()
		require.NoError(t, err)
		if tc.read {
			require.Greater(t, after, before, "%s: the wait read the stored state", tc.name)
		} else {
			require.Zero(t, after, "%s: the state was read", tc.name)
		}
	}
}

// BenchmarkConductor_SubmitWait times conductord's share of a submission
// that waits: the request on conductor.<ns>.submit.<type>, the state
// stored and the job published, and, once the host (the benchmark, on
// another connection) has stored the final state and announced the end,
// the answer. One job at a time; p50 and p99 of the round trip, less the
// host's part, are reported.
func BenchmarkConductor_SubmitWait(b *testing.B) {
	c, err := New(Config{DataDir: b.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(b, err)
	require.NoError(b, c.Start(context.Background()))
	b.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(b, err)
	b.Cleanup(nc.Close)
	host, err := nats.Connect(c.NATSURL())
	require.NoError(b, err)
	b.Cleanup(host.Close)
	js, err := jetstream.New(host)
	require.NoError(b, err)
	ctx := context.Background()
	states, err := js.KeyValue(ctx, c.space.StateBucket())
	require.NoError(b, err)
	// The host: each job's final state stored, then its end announced.
	hosted := make(chan time.Duration, 1) // the host's part of the job

	_, err = host.Subscribe(c.space.JobAt("squares", ""), func(m *nats.Msg) {
		start := time.Now()
		id := m.Header.Get(names.HeaderJobID)
		rev, _ := strconv.ParseUint(m.Header.Get(names.HeaderStateRev), 10, 64)
		final, _ := json.Marshal(wire.Job{ID: id, Type: "squares", Status: wire.StatusSucceeded, Attempts: 1, Result: m.Data})
		if _, err := states.Update(ctx, id, final, rev); err != nil {
			b.Error(err)
		}
		ends := wire.Ends{Type: "squares", Jobs: []wire.End{{ID: id, Status: wire.StatusSucceeded, State: final}}}
		if _, err := js.Publish(ctx, c.space.JobEnds("squares"), ends.AppendJSON(nil)); err != nil {
			b.Error(err)
		}
		hosted <- time.Since(start)
	})
	require.NoError(b, err)
	require.NoError(b, host.Flush())
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		m := nats.NewMsg(c.space.Submit("squares"))
		m.Header.Set(names.HeaderWait, "10s")
		m.Data = []byte(strconv.Itoa(i))
		start := time.Now()
		a, err := nc.RequestMsg(m, 15*time.Second)
		took := time.Since(start)
		require.NoError(b, err)
		require.Equal(b, "200", a.Header.Get(names.HeaderStatus), "%s", a.Data)
		ds = append(ds, took-<-hosted)
	}
	b.StopTimer()
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50_us")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99_us")
}
