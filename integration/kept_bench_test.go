package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/archive"
	"github.com/conductor-run/conductor/internal/subject"
)

// BenchmarkKeptStates measures what the final states conductord keeps cost
// it, in one run on the real binary:
//   - kept_states: KEPT_STATES (default 1,000,000; the goal's figure is
//     10,000,000) states of finished jobs in conductord's archive, filled
//     straight into --data/archive as conductord puts them;
//   - start_s, rss_MB: the time from conductord's exec to its first
//     healthy /healthz, and its RSS then; rss_after_gets_MB and
//     get_p50_ms: after 1,000 GET /v1/jobs/{id} of random kept jobs;
//   - empty_start_s, empty_rss_MB: the same with nothing kept, the
//     baseline of the same run;
//   - bucket_*: KEPT_BUCKET (default 1,000,000) states kept the way they
//     were before the archive, in the state bucket, and conductord
//     restarted on them: its start and RSS, and their cost per million.
func BenchmarkKeptStates(b *testing.B) {
	n := envInt(b, "KEPT_STATES", 1_000_000)
	nb := envInt(b, "KEPT_BUCKET", 1_000_000)
	for range b.N {
		empty := newCluster(b)
		emptyStart, emptyRSS := restartTimed(b, empty)

		addrs := freeAddrs(b, 2)
		c := &cluster{t: b, data: b.TempDir(), natsAddr: addrs[0], httpAddr: addrs[1]}
		t0 := time.Now()
		ids := fillArchive(b, filepath.Join(c.data, "archive", "default"), n)
		b.Logf("%d states archived in %v", n, time.Since(t0).Round(time.Millisecond))
		begin := time.Now()
		c.startConductor()
		start := time.Since(begin)
		pid := c.conductor.cmd.Process.Pid
		rss := rssMB(pid)
		p50 := getKept(b, c, ids)
		rssAfter := rssMB(pid)

		bucketStart, bucketRSS := bucketBaseline(b, nb)

		b.ReportMetric(float64(n), "kept_states")
		b.ReportMetric(start.Seconds(), "start_s")
		b.ReportMetric(rss, "rss_MB")
		b.ReportMetric(rssAfter, "rss_after_gets_MB")
		b.ReportMetric(ms(p50), "get_p50_ms")
		b.ReportMetric(emptyStart.Seconds(), "empty_start_s")
		b.ReportMetric(emptyRSS, "empty_rss_MB")
		b.ReportMetric(bucketStart.Seconds(), "bucket_start_s")
		b.ReportMetric(bucketRSS, "bucket_rss_MB")
		per := float64(nb) / 1e6
		b.ReportMetric((bucketRSS-emptyRSS)/per, "bucket_MB_per_M")
		b.ReportMetric((bucketStart-emptyStart).Seconds()/per, "bucket_s_per_M")
	}
}

// restartTimed stops c's conductord and starts it again on its data,
// returning the time to its first healthy /healthz and its RSS then.
func restartTimed(b *testing.B, c *cluster) (time.Duration, float64) {
	b.Helper()
	c.conductor.stop(b, 60*time.Second)
	begin := time.Now()
	c.startConductor()
	return time.Since(begin), rssMB(c.conductor.cmd.Process.Pid)
}

// fillArchive puts n finished states, of the size of a no-op job's, into
// an archive at dir, and returns a sample of their ids.
func fillArchive(b *testing.B, dir string, n int) []string {
	b.Helper()
	s, err := archive.Open(archive.Config{Dir: dir})
	require.NoError(b, err)
	const batch = 1000
	var sample []string
	ended := time.Now().Add(-time.Hour)
	entries := make([]archive.Entry, 0, batch)
	for i := range n {
		id := fmt.Sprintf("0193b8a4-0000-7000-8000-%012d", i)
		entries = append(entries, archive.Entry{ID: id, Ended: ended, State: keptState(id)})
		if i%max(n/1000, 1) == 0 {
			sample = append(sample, id)
		}
		if len(entries) == batch || i == n-1 {
			require.NoError(b, s.Put(entries...))
			entries = entries[:0]
		}
	}
	require.NoError(b, s.Close())
	return sample
}

// keptState is the final state of a no-op job, about 330 bytes.
func keptState(id string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"type":"noop","status":"succeeded","attempts":1,"result":{},"created_at":"2026-12-02T10:00:00.000000001Z","updated_at":"2026-12-02T10:00:00.000100001Z","history":[{"attempt":1,"host":"host-a","pid":4242,"started_at":"2026-12-02T10:00:00.000050001Z","ended_at":"2026-12-02T10:00:00.000100001Z"}],"holder":"24.5e0c8a41f2d3"}`, id)
}

// getKept reads 1,000 of ids through GET /v1/jobs/{id}, each one found,
// and returns the median time of a read.
func getKept(b *testing.B, c *cluster, ids []string) time.Duration {
	b.Helper()
	var ds []time.Duration
	for range 1000 {
		id := ids[rand.IntN(len(ids))]
		t0 := time.Now()
		resp, err := http.Get(c.url("/v1/jobs/" + id))
		require.NoError(b, err)
		resp.Body.Close()
		ds = append(ds, time.Since(t0))
		require.Equal(b, http.StatusOK, resp.StatusCode, id)
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// bucketBaseline keeps n final states in the state bucket, as they were
// kept before the archive (straight in, with no time to live), restarts
// conductord on them, and returns its start and RSS.
func bucketBaseline(b *testing.B, n int) (time.Duration, float64) {
	b.Helper()
	c := newCluster(b)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	require.NoError(b, err)
	space, _ := subject.New("default")
	for i := range n {
		id := fmt.Sprintf("0193b8a4-0000-7000-9000-%012d", i)
		_, err := js.PublishAsync(subject.KV(space.StateBucket(), id), keptState(id))
		require.NoError(b, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Minute):
		b.Fatal("the states were not all stored")
	}
	st, err := js.Stream(context.Background(), "KV_"+space.StateBucket())
	require.NoError(b, err)
	require.EqualValues(b, n, st.CachedInfo().State.Msgs)
	return restartTimed(b, c)
}

// envInt reads a positive count from the environment, or def.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a count", name, v)
	}
	return n
}
