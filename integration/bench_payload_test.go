package integration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
)

// BenchmarkPayloads measures no-op jobs of payloads of 100 B, 10 KB,
// 100 KB and 1 MB (issue 19: close to the limit for real workloads) against
// the JetStream work queue with messages of the same size, in the same run
// on the same conductord. For each size, BENCH_PAIRS pairs (default 5) of:
//   - raw: a file-backed work-queue stream on conductord's embedded server,
//     purged before each phase; n messages of the size published
//     asynchronously while 2 pull consumers ack them (drainRaw's shape);
//   - e2e: n no-op jobs of the size published on NATS to
//     conductor.default.jobs.noop, run by 2 noop-worker processes under
//     one workerd, counted by their succeeded events (endToEndN's shape).
//
// Reported per size: raw msgs/s and MB/s, e2e jobs/s and MB/s, the ratio
// e2e/raw of each pair (median, min, max), and the CPU per job of
// conductord, workerd and one worker during the e2e phases (median of the
// pairs; the worker's CPU is divided by all the phase's jobs, of which it
// ran about half). The payload is a JSON object with a long string field, exactly
// the size. Goals: ratio >= 0.5 at 100 B, >= 0.4 at 10 KB and above,
// >= 100 MB/s e2e at 1 MB.
//
// BENCH_PAYLOAD_SIZES chooses the sizes ("100,10240"); BENCH_PAYLOAD_JOBS
// the jobs per phase, one count for all sizes or size:count pairs
// ("100:20000,1000000:300"); the defaults make each phase last seconds.
//
//	go test -run '^$' -bench BenchmarkPayloads -benchtime 1x ./integration/
func BenchmarkPayloads(b *testing.B) {
	sizes := payloadSizes(b)
	for range b.N {
		c, nc, js := benchCluster(b)
		ctx := context.Background()
		space, _ := subject.New("default")

		// A 1 MB payload must fit the job stream and the server's limit.
		jobs, err := js.Stream(ctx, space.JobStream())
		require.NoError(b, err)
		maxMsg := jobs.CachedInfo().Config.MaxMsgSize
		b.Logf("job stream max message size %d bytes, server max payload %d bytes", maxMsg, nc.MaxPayload())
		for _, size := range sizes {
			if (maxMsg > 0 && int64(size) > int64(maxMsg)) || int64(size) > nc.MaxPayload() {
				b.Fatalf("a payload of %d bytes does not fit: job stream max message size %d, server max payload %d", size, maxMsg, nc.MaxPayload())
			}
		}

		stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: "bench-payload", Subjects: []string{"bench.payload"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage,
		})
		require.NoError(b, err)
		cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "payload", AckPolicy: jetstream.AckExplicitPolicy})
		require.NoError(b, err)

		// BENCH_PAYLOAD_STATE=1 adds a third phase to each pair: the raw
		// work queue with a job state of ~330 bytes stored for each
		// message (published asynchronously to a key-value bucket, a key a
		// message, before its ack), the least a design that keeps each
		// job's final state pays.
		var states jetstream.JetStream
		if os.Getenv("BENCH_PAYLOAD_STATE") == "1" {
			_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench-state", Storage: jetstream.FileStorage})
			require.NoError(b, err)
			states, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
			require.NoError(b, err)
		}

		pids := noopPool(c)

		logMachine(b)
		var summary []string
		for _, size := range sizes {
			n := payloadJobs(b, size)
			payload := jsonPayload(size)
			pub := newSizedPub(b, nc, size)
			mb := float64(size) / 1e6
			var raws, e2es, ratios, rawStates []float64
			cpu := map[string][]float64{}
			for i := range benchPairs(b) {
				require.NoError(b, stream.Purge(ctx))
				raw := drainSized(b, pub, cons, "bench.payload", n, payload)
				if states != nil {
					require.NoError(b, stream.Purge(ctx))
					withState := drainWithStates(b, pub, states, cons, "bench.payload", n, payload)
					b.Logf("%s pair %d: raw with a state a message %.0f msgs/s (%.3f of raw)", sizeName(size), i+1, withState, withState/raw)
					rawStates = append(rawStates, withState/raw)
				}
				before := usages(pids)
				e2e := runSized(b, nc, pub, []string{"noop"}, n, payload)
				after := usages(pids)
				for name := range pids {
					cpu[name] = append(cpu[name], cpuPerJob(before[name], after[name], n))
				}
				b.Logf("%s pair %d: raw %.0f msgs/s (%.1f MB/s), e2e %.0f jobs/s (%.1f MB/s), ratio %.3f; cpu per job µs: conductord %.0f, workerd %.0f, worker %.0f",
					sizeName(size), i+1, raw, raw*mb, e2e, e2e*mb, e2e/raw, cpu["conductord"][i], cpu["workerd"][i], cpu["worker"][i])
				raws, e2es, ratios = append(raws, raw), append(e2es, e2e), append(ratios, e2e/raw)
			}
			p := sizeName(size)
			reportMMM(b, "raw_"+p+"_msgs/s", raws, 1)
			reportMMM(b, "raw_"+p+"_MB/s", raws, mb)
			reportMMM(b, "e2e_"+p+"_jobs/s", e2es, 1)
			reportMMM(b, "e2e_"+p+"_MB/s", e2es, mb)
			reportMMM(b, "ratio_"+p, ratios, 1)
			if len(rawStates) > 0 {
				reportMMM(b, "raw_with_state_"+p+"_of_raw", rawStates, 1)
			}
			for _, name := range []string{"conductord", "workerd", "worker"} {
				_, med, _ := spread(cpu[name])
				b.ReportMetric(med, name+"_"+p+"_cpu_us/job")
			}
			_, rawMed, _ := spread(raws)
			_, e2eMed, _ := spread(e2es)
			lo, med, hi := spread(ratios)
			summary = append(summary, fmt.Sprintf("%-7s %6d %10.0f %9.1f %10.0f %9.1f %6.3f %6.3f %6.3f %8.0f %8.0f %8.0f  %s",
				p, n, rawMed, rawMed*mb, e2eMed, e2eMed*mb, med, lo, hi,
				median(cpu["conductord"]), median(cpu["workerd"]), median(cpu["worker"]), payloadGoal(size, med, e2eMed*mb)))
		}
		b.Logf("payloads, %d pairs (medians; ratio median, min, max; CPU µs per job during e2e):\n%-7s %6s %10s %9s %10s %9s %6s %6s %6s %8s %8s %8s  %s\n%s",
			benchPairs(b), "size", "n", "raw msg/s", "raw MB/s", "e2e job/s", "e2e MB/s", "ratio", "min", "max", "cond", "workerd", "worker", "goal",
			strings.Join(summary, "\n"))
	}
}

// payloadGoal says whether the figures of size meet issue 19's goals.
func payloadGoal(size int, ratio, mbps float64) string {
	verdict := func(ok bool, goal string) string {
		if ok {
			return "meets " + goal
		}
		return "MISSES " + goal
	}
	switch {
	case size >= 1_000_000:
		return verdict(ratio >= 0.4, "ratio >= 0.4") + ", " + verdict(mbps >= 100, "e2e >= 100 MB/s")
	case size >= 10_000:
		return verdict(ratio >= 0.4, "ratio >= 0.4")
	default:
		return verdict(ratio >= 0.5, "ratio >= 0.5")
	}
}

// payloadSizes reads BENCH_PAYLOAD_SIZES, by default 100 B, 10 KB, 100 KB
// and 1 MB.
func payloadSizes(b *testing.B) []int {
	v := cmp.Or(os.Getenv("BENCH_PAYLOAD_SIZES"), "100,10240,102400,1000000")
	var sizes []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 16 {
			b.Fatalf("BENCH_PAYLOAD_SIZES=%q: want sizes of 16 bytes or more", v)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// payloadJobs is the jobs per phase of size: BENCH_PAYLOAD_JOBS, or about
// a few seconds' worth on a small machine.
func payloadJobs(b *testing.B, size int) int {
	if v := os.Getenv("BENCH_PAYLOAD_JOBS"); v != "" {
		for f := range strings.SplitSeq(v, ",") {
			s, count, ok := strings.Cut(strings.TrimSpace(f), ":")
			if !ok {
				count = s
			} else if s != strconv.Itoa(size) {
				continue
			}
			n, err := strconv.Atoi(count)
			if err != nil || n < 1 {
				b.Fatalf("BENCH_PAYLOAD_JOBS=%q: want a count or size:count pairs", v)
			}
			return n
		}
	}
	switch {
	case size <= 1000:
		return 20000
	case size <= 10240:
		return 10000
	case size <= 102400:
		return 2000
	}
	return 300
}

func sizeName(size int) string {
	switch {
	case size >= 1<<20 && size%(1<<20) == 0:
		return strconv.Itoa(size>>20) + "MiB"
	case size >= 1_000_000 && size%1_000_000 == 0:
		return strconv.Itoa(size/1_000_000) + "MB"
	case size >= 1000 && size%1024 == 0:
		return strconv.Itoa(size/1024) + "KiB"
	case size >= 1000 && size%1000 == 0:
		return strconv.Itoa(size/1000) + "KB"
	}
	return strconv.Itoa(size) + "B"
}

// jsonPayload is a JSON object of exactly size bytes (size >= 16): a
// document with an id and a long text field, as an upload or a report
// would be.
func jsonPayload(size int) []byte {
	head, tail := `{"id":"doc-1","body":"`, `"}`
	if size < len(head)+len(tail) {
		head = `{"b":"`
	}
	p := make([]byte, 0, size)
	p = append(p, head...)
	const text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. "
	for i := 0; len(p) < size-len(tail); i++ {
		p = append(p, text[i%len(text)])
	}
	return append(p, tail...)
}

// benchPairs is the number of A/B pairs (or rounds): BENCH_PAIRS, default 5.
func benchPairs(b *testing.B) int { return envInt(b, "BENCH_PAIRS", 5) }

// reportMMM reports the median, min and max of xs (each times scale) as
// unit, unit_min and unit_max.
func reportMMM(b *testing.B, unit string, xs []float64, scale float64) {
	lo, med, hi := spread(xs)
	b.ReportMetric(med*scale, unit)
	b.ReportMetric(lo*scale, unit+"_min")
	b.ReportMetric(hi*scale, unit+"_max")
}

// benchCluster starts a cluster for a benchmark, with a connection to its
// server and a JetStream client on it.
func benchCluster(b *testing.B) (*cluster, *nats.Conn, jetstream.JetStream) {
	c := newCluster(b)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(b, err)
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	return c, nc, js
}

func median(xs []float64) float64 { _, med, _ := spread(xs); return med }

// cpuPerJob is the CPU a process used between two usages, per job, in µs.
func cpuPerJob(before, after usage, n int) float64 {
	return float64((after.cpu - before.cpu).Microseconds()) / float64(n)
}

// sizedPub publishes messages of one size asynchronously, and counts the
// publishes that failed.
type sizedPub struct {
	js     jetstream.JetStream
	failed atomic.Int64
}

// newSizedPub makes a publisher of messages of size on nc. It keeps at
// most 32 MiB of them unacknowledged (and 4000, publishAsync's default):
// a server whose stream ingest queue overflows drops what it cannot take.
func newSizedPub(b *testing.B, nc *nats.Conn, size int) *sizedPub {
	p := &sizedPub{}
	var err error
	p.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(min(4000, max(16, (32<<20)/size))),
		jetstream.WithPublishAsyncTimeout(time.Minute),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, _ error) { p.failed.Add(1) }))
	require.NoError(b, err)
	return p
}

// publish is publishAsync with payload as every message's data; it fails
// the benchmark if a publish was not acknowledged.
func (p *sizedPub) publish(b *testing.B, subj func(int) string, n int, payload []byte) {
	b.Helper()
	js := p.js
	for i := range n {
		_, err := js.PublishAsync(subj(i), payload)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishes not acknowledged within a minute")
			}
			_, err = js.PublishAsync(subj(i), payload)
		}
		require.NoError(b, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged within a minute")
	}
	if f := p.failed.Swap(0); f > 0 {
		b.Fatalf("%d of %d publishes failed", f, n)
	}
}

// drainSized is drainRaw with payload as every message's data.
func drainSized(b *testing.B, pub *sizedPub, cons jetstream.Consumer, subj string, n int, payload []byte) float64 {
	b.Helper()
	var acked atomic.Int64
	done := make(chan struct{})
	// The default pulls of 500 messages each, of large messages, would
	// exceed what the server buffers for a connection (64 MiB) and have it
	// cut as a slow consumer: large messages are pulled by 16 MiB.
	var opts []jetstream.PullConsumeOpt
	if 500*len(payload) > 16<<20 {
		opts = append(opts, jetstream.PullMaxBytes(16<<20))
	}
	start := time.Now()
	for range 2 {
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			if acked.Add(1) == int64(n) {
				close(done)
			}
		}, opts...)
		require.NoError(b, err)
		defer cc.Stop()
	}
	pub.publish(b, func(int) string { return subj }, n, payload)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("raw: only %d of %d acked", acked.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// runSized publishes n jobs of payload on NATS, spread evenly over types,
// and returns the jobs a second from the first publish until the
// succeeded events of all n have come.
func runSized(b *testing.B, nc *nats.Conn, pub *sizedPub, types []string, n int, payload []byte) float64 {
	b.Helper()
	space, _ := subject.New("default")
	ours := map[string]bool{}
	for _, t := range types {
		ours[t] = true
	}
	var ok atomic.Int64
	done := make(chan struct{})
	sub, err := nc.Subscribe(space.JobEvent("*", "succeeded"), func(m *nats.Msg) {
		if typ, _, _ := space.ParseJobEvent(m.Subject); ours[typ] && ok.Add(1) == int64(n) {
			close(done)
		}
	})
	require.NoError(b, err)
	defer sub.Unsubscribe()
	require.NoError(b, sub.SetPendingLimits(-1, -1))
	require.NoError(b, nc.Flush())
	start := time.Now()
	pub.publish(b, func(i int) string { return space.Job(types[i%len(types)]) }, n, payload)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("e2e: only %d of %d succeeded", ok.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// drainWithStates is drainSized with a job state stored for each message
// before its ack: published asynchronously to a key-value bucket, one key
// a message, as workerd pipelines its final states.
func drainWithStates(b *testing.B, pub *sizedPub, states jetstream.JetStream, cons jetstream.Consumer, subj string, n int, payload []byte) float64 {
	b.Helper()
	state := jsonPayload(330)
	var acked, key atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	for range 2 {
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if _, err := states.PublishAsync("$KV.bench-state.k"+strconv.FormatInt(key.Add(1), 10), state); err != nil {
				b.Errorf("store a state: %v", err)
			}
			_ = m.Ack()
			if acked.Add(1) == int64(n) {
				close(done)
			}
		})
		require.NoError(b, err)
		defer cc.Stop()
	}
	pub.publish(b, func(int) string { return subj }, n, payload)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("raw with states: only %d of %d acked", acked.Load(), n)
	}
	select {
	case <-states.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("states not stored within a minute")
	}
	return float64(n) / time.Since(start).Seconds()
}

// noopPool starts a workerd of c with a pool of 2 noop-workers, waits for
// them, and returns the pids whose CPU a benchmark reads: conductord's,
// workerd's and one worker's.
func noopPool(c *cluster) map[string]int {
	w := c.workerd("bench", fmt.Sprintf("name=noop,count=2,cmd=%s", filepath.Join(bin, "noop-worker")))
	c.waitWorkers("noop", 2)
	pids := map[string]int{"conductord": c.conductor.cmd.Process.Pid, "workerd": w.cmd.Process.Pid}
	for _, wk := range c.workers() {
		if wk.Pool == "noop" && wk.PID > 0 {
			pids["worker"] = wk.PID
			break
		}
	}
	return pids
}
