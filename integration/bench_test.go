package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// benchJobs is how many jobs each throughput measurement runs.
const benchJobs = 50_000

// BenchmarkEndToEnd measures, in one run on one conductord:
//   - raw_msgs/s: the JetStream work-queue limit: publish benchJobs
//     messages while 2 pull consumers ack them (the baseline); and, for
//     context, 2 consumers pulling and acking one message at a time;
//   - raw_job_path_msgs/s: the JetStream floor of the job path: the same
//     with a state store, an ack and an event per message (rawJobPath);
//   - e2e_jobs/s: benchJobs no-op jobs published on NATS, run by 2 worker
//     processes under one workerd, counted succeeded; and their ratio (the
//     goal's measure); the rate of the jobs that succeeded once the last
//     publish was acknowledged (e2e_after_publish_jobs/s, for context); then
//     the same with GOMAXPROCS=1 in the workers, and without prefetch;
//   - the HTTP submit-to-result round trip (?wait=) p50/p99, next to a raw
//     NATS request/reply round trip;
//   - the RSS of conductord, workerd and one SDK worker.
//
// Run it with make bench; figures go to docs/benchmarks.md.
func BenchmarkEndToEnd(b *testing.B) {
	for range b.N {
		c := newCluster(b)
		nc, err := nats.Connect(c.natsURL())
		require.NoError(b, err)
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(b, err)

		server := map[string]int{"conductord": c.conductor.cmd.Process.Pid}
		u0 := usages(server)
		raw := rawWorkQueue(b, js)
		u1 := usages(server)
		raw1 := rawOneAtATime(b, js)
		u2 := usages(server)
		floor := rawJobPath(b, nc, js)
		u3 := usages(server)
		logUsage(b, "raw", "conductord", u0["conductord"], u1["conductord"])
		logUsage(b, "job path floor", "conductord", u2["conductord"], u3["conductord"])
		w := c.workerd("bench", fmt.Sprintf("name=noop,count=2,cmd=%s", filepath.Join(bin, "noop-worker")),
			fmt.Sprintf("name=noop1,count=2,env=GOMAXPROCS=1,cmd=%s", filepath.Join(bin, "noop-worker")),
			fmt.Sprintf("name=noop0,count=2,env=CONDUCTOR_PREFETCH=0,cmd=%s", filepath.Join(bin, "noop-worker")),
			fmt.Sprintf("name=squares,count=2,cmd=%s", filepath.Join(bin, "squares-worker")))
		c.waitWorkers("noop", 2)
		c.waitWorkers("noop1", 2)
		c.waitWorkers("noop0", 2)
		c.waitWorkers("squares", 2)
		pids := map[string]int{"conductord": c.conductor.cmd.Process.Pid, "workerd": w.cmd.Process.Pid}
		for _, wk := range c.workers() {
			if wk.Pool == "noop" {
				pids[fmt.Sprintf("worker-%d", wk.Index)] = wk.PID
			}
		}
		before := usages(pids)
		e2e, steady := endToEndPhases(b, nc, js, "noop")
		after := usages(pids)
		for name, u := range after {
			logUsage(b, "e2e", name, before[name], u)
		}
		b.ReportMetric(raw, "raw_msgs/s")
		b.ReportMetric(raw1, "raw_next1_msgs/s")
		b.ReportMetric(floor, "raw_job_path_msgs/s")
		b.ReportMetric(e2e, "e2e_jobs/s")
		b.ReportMetric(e2e/raw, "ratio")
		// The same once the publisher is done: the job path alone on the
		// cores. Context for the ratio, not the goal's measure.
		b.ReportMetric(steady, "e2e_after_publish_jobs/s")
		// The same with the workers' Go runtime on one thread: a worker runs
		// one job at a time, and idle threads spinning between the SDK's
		// goroutines cost the other processes CPU on a small machine.
		e2e1 := endToEnd(b, nc, js, "noop1")
		b.ReportMetric(e2e1, "e2e_gomaxprocs1_jobs/s")
		b.ReportMetric(e2e1/raw, "ratio_gomaxprocs1")
		// The same without prefetch: each worker takes one job at a time.
		e2e0 := endToEnd(b, nc, js, "noop0")
		b.ReportMetric(e2e0, "e2e_prefetch0_jobs/s")

		httpP50, httpP99 := httpRoundTrip(b, c, 2000)
		rrP50, rrP99 := natsRoundTrip(b, nc, 2000)
		b.ReportMetric(ms(httpP50), "http_wait_p50_ms")
		b.ReportMetric(ms(httpP99), "http_wait_p99_ms")
		b.ReportMetric(ms(rrP50), "nats_rr_p50_ms")
		b.ReportMetric(ms(rrP99), "nats_rr_p99_ms")

		b.ReportMetric(rssMB(c.conductor.cmd.Process.Pid), "conductord_MB")
		b.ReportMetric(rssMB(w.cmd.Process.Pid), "workerd_MB")
		for _, wk := range c.workers() {
			if wk.Pool == "squares" && wk.PID > 0 {
				b.ReportMetric(rssMB(wk.PID), "sdk_worker_MB")
				break
			}
		}
		b.Logf("machine: %s/%s, %d CPUs; raw=%.0f msgs/s (one at a time: %.0f; job path floor: %.0f, %.2f) e2e=%.0f jobs/s ratio=%.2f (after the last publish: %.0f, %.2f; GOMAXPROCS=1 workers: %.0f, %.2f; no prefetch: %.0f, %.2f); http ?wait p50=%s p99=%s; nats request/reply p50=%s p99=%s",
			runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), raw, raw1, floor, floor/raw, e2e, e2e/raw, steady, steady/raw, e2e1, e2e1/raw, e2e0, e2e0/raw, httpP50, httpP99, rrP50, rrP99)
	}
}

// rawWorkQueue is the baseline: publish benchJobs messages asynchronously to
// a file-backed work-queue stream while 2 pull consumers ack them.
func rawWorkQueue(b *testing.B, js jetstream.JetStream) float64 {
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "bench-raw", Subjects: []string{"bench.raw"}, Retention: jetstream.WorkQueuePolicy,
	})
	require.NoError(b, err)
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(b, err)
	return drainRaw(b, js, cons, "bench.raw", benchJobs, "raw")
}

// drainRaw publishes n messages to subj asynchronously while 2 consumers
// of cons ack them, and returns the messages acked a second, from the
// first publish to the last ack; what names the baseline in a failure.
func drainRaw(b *testing.B, js jetstream.JetStream, cons jetstream.Consumer, subj string, n int, what string) float64 {
	b.Helper()
	var acked atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	for range 2 {
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			if acked.Add(1) == int64(n) {
				close(done)
			}
		})
		require.NoError(b, err)
		defer cc.Stop()
	}
	publishAsync(b, js, func(int) string { return subj }, n)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%s: only %d of %d acked", what, acked.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// rawOneAtATime is a second, lower baseline: 2 consumers that each pull one
// message, ack it, and pull the next, as a naive per-job worker loop would.
func rawOneAtATime(b *testing.B, js jetstream.JetStream) float64 {
	const n = benchJobs / 5
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "bench-raw1", Subjects: []string{"bench.raw1"}, Retention: jetstream.WorkQueuePolicy,
	})
	require.NoError(b, err)
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw1", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(b, err)
	publishAsync(b, js, func(int) string { return "bench.raw1" }, n)
	var left atomic.Int64
	left.Store(n)
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
				if err != nil {
					b.Error(err)
					return
				}
				_ = m.Ack()
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// endToEnd publishes benchJobs no-op jobs on NATS and waits until the job
// events say they all succeeded.
func endToEnd(b *testing.B, nc *nats.Conn, js jetstream.JetStream, typ string) float64 {
	rate, _ := endToEndPhases(b, nc, js, typ)
	return rate
}

// endToEndPhases is endToEnd, and also the rate of the jobs that succeeded
// after the last publish was acknowledged: the job path alone, without the
// publisher and the server storing its messages on the same cores.
func endToEndPhases(b *testing.B, nc *nats.Conn, js jetstream.JetStream, typ string) (rate, afterPublish float64) {
	return endToEndN(b, nc, js, typ, benchJobs)
}

// endToEndN is endToEndPhases with n jobs.
func endToEndN(b *testing.B, nc *nats.Conn, js jetstream.JetStream, typ string, n int) (rate, afterPublish float64) {
	space, _ := subject.New("default")
	var ok atomic.Int64
	done := make(chan struct{})
	sub, err := nc.Subscribe(space.JobEvent(typ, "succeeded"), func(*nats.Msg) {
		if ok.Add(1) == int64(n) {
			close(done)
		}
	})
	require.NoError(b, err)
	defer sub.Unsubscribe()
	require.NoError(b, sub.SetPendingLimits(-1, -1))
	require.NoError(b, nc.Flush())
	start := time.Now()
	publishAsync(b, js, func(int) string { return space.Job(typ) }, n)
	published, okThen := time.Now(), ok.Load()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("e2e: only %d of %d succeeded", ok.Load(), n)
	}
	end := time.Now()
	rate = float64(n) / end.Sub(start).Seconds()
	if okThen < int64(n) {
		afterPublish = float64(int64(n)-okThen) / end.Sub(published).Seconds()
	}
	b.Logf("e2e %s: %d jobs in %v; publishing took %v, with %d succeeded by then", typ, n, end.Sub(start), published.Sub(start), okThen)
	return rate, afterPublish
}

func publishAsync(b *testing.B, js jetstream.JetStream, subj func(int) string, n int) {
	for i := range n {
		_, err := js.PublishAsync(subj(i), []byte(strconv.Itoa(i)))
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// A slow spell of the machine: the server acks slower than we
			// publish. Wait for the acks outstanding, then go on.
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishes not acknowledged within a minute")
			}
			_, err = js.PublishAsync(subj(i), []byte(strconv.Itoa(i)))
		}
		require.NoError(b, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged within a minute")
	}
}

// httpRoundTrip times n sequential POST /v1/jobs/squares?wait=10s.
func httpRoundTrip(b *testing.B, c *cluster, n int) (p50, p99 time.Duration) {
	client := &http.Client{}
	var ds []time.Duration
	for i := range n + 100 {
		start := time.Now()
		resp, err := client.Post(c.url("/v1/jobs/squares?wait=10s"), "application/json", strings.NewReader(strconv.Itoa(i)))
		require.NoError(b, err)
		resp.Body.Close()
		require.Equal(b, http.StatusOK, resp.StatusCode)
		if i >= 100 { // warm-up
			ds = append(ds, time.Since(start))
		}
	}
	return percentiles(ds)
}

// natsRoundTrip times n sequential NATS requests to a responder on the same
// connection's server: the floor of any request/reply through conductord.
func natsRoundTrip(b *testing.B, nc *nats.Conn, n int) (p50, p99 time.Duration) {
	sub, err := nc.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	require.NoError(b, err)
	defer sub.Unsubscribe()
	var ds []time.Duration
	for i := range n + 100 {
		start := time.Now()
		_, err := nc.Request("bench.echo", []byte("1"), 5*time.Second)
		require.NoError(b, err)
		if i >= 100 {
			ds = append(ds, time.Since(start))
		}
	}
	return percentiles(ds)
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// usage is what a process has used so far: CPU time and system calls.
type usage struct {
	cpu           time.Duration
	reads, writes int64 // read and write system calls, of any kind of file
	switches      int64 // context switches of its live threads
}

// logUsage logs what a process used during a phase of benchJobs jobs.
func logUsage(b *testing.B, phase, name string, before, after usage) {
	cpu := after.cpu - before.cpu
	per := func(n int64) float64 { return float64(n) / benchJobs }
	b.Logf("during %s: %s cpu %.2fs (%.0fµs per job); per job: %.2f reads, %.2f writes (system calls), %.2f context switches",
		phase, name, cpu.Seconds(), per(cpu.Microseconds()), per(after.reads-before.reads), per(after.writes-before.writes), per(after.switches-before.switches))
}

// usages reads each process's user+system CPU time and its read and write
// system calls from /proc.
func usages(pids map[string]int) map[string]usage {
	out := map[string]usage{}
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which ends with ')'): utime is
		// the 12th, stime the 13th, in clock ticks (100 per second).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ut, _ := strconv.Atoi(f[11])
		st, _ := strconv.Atoi(f[12])
		u := usage{cpu: time.Duration(ut+st) * 10 * time.Millisecond}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
			for line := range strings.SplitSeq(string(b), "\n") {
				k, v, _ := strings.Cut(line, ": ")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "syscr":
					u.reads = n
				case "syscw":
					u.writes = n
				}
			}
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			if err != nil {
				continue
			}
			for line := range strings.SplitSeq(string(b), "\n") {
				k, v, _ := strings.Cut(line, ":")
				if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					u.switches += n
				}
			}
		}
		out[name] = u
	}
	return out
}

// rssMB reads a process's resident set from /proc, in MiB.
func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	return -1
}

// rawJobPath is the JetStream floor of the job path: the messages conductor
// sends for every job, without processes, pipes or bookkeeping. 2 batched
// consumers take each message, store a state for it in a file-backed KV
// bucket, ack it once the store is acknowledged, and publish an event that
// a subscriber counts. The state and the event are the size of a no-op
// job's, encoded once: the floor pays for no JSON.
func rawJobPath(b *testing.B, nc *nats.Conn, js jetstream.JetStream) float64 {
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "bench-floor", Subjects: []string{"bench.floor"}, Retention: jetstream.WorkQueuePolicy,
	})
	require.NoError(b, err)
	now := time.Now().UTC()
	state, err := json.Marshal(wire.Job{
		ID: "seq-100000", Type: "noop", Status: wire.StatusSucceeded, Attempts: 1, CreatedAt: now, UpdatedAt: now,
		History: []wire.Attempt{{Attempt: 1, Host: "bench", PID: 123456, StartedAt: now, EndedAt: now}},
	})
	require.NoError(b, err)
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench-floor", TTL: 72 * time.Hour})
	require.NoError(b, err)
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(b, err)
	var counted atomic.Int64
	done := make(chan struct{})
	sub, err := nc.Subscribe("bench.floor.event", func(*nats.Msg) {
		if counted.Add(1) == benchJobs {
			close(done)
		}
	})
	require.NoError(b, err)
	defer sub.Unsubscribe()
	require.NoError(b, sub.SetPendingLimits(-1, -1))
	type stored struct {
		m   jetstream.Msg
		fut jetstream.PubAckFuture
	}
	var (
		keys atomic.Uint64
		wg   sync.WaitGroup
		// At the end: the consumers stop, then the ackers (their channels
		// closed), then the connections close.
		stops  []func()
		ackers []chan stored
		conns  []*nats.Conn
	)
	defer func() {
		for _, stop := range stops {
			stop()
		}
		for _, acks := range ackers {
			close(acks)
		}
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for range 2 {
		cnc, err := nats.Connect(nc.ConnectedUrl())
		require.NoError(b, err)
		conns = append(conns, cnc)
		cjs, err := jetstream.New(cnc)
		require.NoError(b, err)
		acks := make(chan stored, 1024)
		ackers = append(ackers, acks)
		wg.Go(func() {
			for s := range acks {
				select {
				case <-s.fut.Ok():
				case err := <-s.fut.Err():
					b.Error(err)
					continue
				}
				if err := s.m.Ack(); err != nil {
					b.Error(err)
				}
				ev := nats.NewMsg("bench.floor.event")
				ev.Header.Set(names.HeaderJobID, "seq-100000")
				ev.Data = state
				if err := cnc.PublishMsg(ev); err != nil {
					b.Error(err)
				}
			}
		})
		cc, err := cons.Consume(func(m jetstream.Msg) {
			key := "$KV.bench-floor.k" + strconv.FormatUint(keys.Add(1), 10)
			fut, err := cjs.PublishAsync(key, state)
			if err != nil {
				b.Error(err)
				return
			}
			acks <- stored{m, fut}
		})
		require.NoError(b, err)
		stops = append(stops, cc.Stop)
	}
	publishAsync(b, js, func(int) string { return "bench.floor" }, benchJobs)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("floor: only %d of %d counted", counted.Load(), benchJobs)
	}
	return float64(benchJobs) / time.Since(start).Seconds()
}
