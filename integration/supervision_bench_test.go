package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// BenchmarkSupervision measures issue 3's figures in one run:
//   - direct_ready: starting noop-worker directly (fork, exec, the Go
//     runtime, the SDK's ready on fd 4), p50/p99: the floor;
//   - restart_ready: from SIGKILL of a pool's worker to its replacement's
//     ready, p50/p99, every one a first restart (restart_reset=1ns);
//   - the RSS and CPU of workerd supervising 50 idle workers;
//   - the throughput of 8 workers (jobs of 2ms) while they are recycled
//     one by one back to back, as a ratio of the same without recycling.
//
// Run it with make bench; figures go to docs/benchmarks.md.
func BenchmarkSupervision(b *testing.B) {
	for range b.N {
		const starts = 100
		d50, d99 := percentiles(directStarts(b, starts))
		r50, r99 := percentiles(restartsToReady(b, starts))
		b.ReportMetric(ms(d50), "direct_ready_p50_ms")
		b.ReportMetric(ms(d99), "direct_ready_p99_ms")
		b.ReportMetric(ms(r50), "restart_ready_p50_ms")
		b.ReportMetric(ms(r99), "restart_ready_p99_ms")

		rss, cpu := idleWorkerd(b, 50, 10*time.Second)
		b.ReportMetric(rss, "workerd_50idle_MB")
		b.ReportMetric(cpu*100, "workerd_50idle_cpu_%")

		plain, recycling, recycles := recycleThroughput(b)
		b.ReportMetric(plain, "plain_jobs/s")
		b.ReportMetric(recycling, "recycling_jobs/s")
		b.ReportMetric(recycling/plain, "recycle_ratio")
		b.Logf("start directly p50=%s p99=%s; crash to ready p50=%s p99=%s; workerd with 50 idle workers: %.1f MB, %.2f%% of a core; 8 workers x 2ms jobs: %.0f jobs/s, %.0f while recycling (%d full recycles), ratio %.2f",
			d50, d99, r50, r99, rss, cpu*100, plain, recycling, recycles, recycling/plain)
	}
}

// directStarts starts noop-worker n times with its channel and times each
// until it says ready.
func directStarts(b *testing.B, n int) []time.Duration {
	path := filepath.Join(bin, "noop-worker")
	var ds []time.Duration
	for range n {
		toR, toW, err := os.Pipe()
		require.NoError(b, err)
		fromR, fromW, err := os.Pipe()
		require.NoError(b, err)
		cmd := exec.Command(path)
		cmd.ExtraFiles = []*os.File{toR, fromW}
		start := time.Now()
		require.NoError(b, cmd.Start())
		toR.Close()
		fromW.Close()
		ready := func() error { // the worker is reaped whatever happens
			defer func() {
				toW.Close()
				fromR.Close()
				if cmd.ProcessState == nil {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
			}()
			line, err := bufio.NewReader(fromR).ReadString('\n')
			if err != nil {
				return err
			}
			ds = append(ds, time.Since(start))
			if !strings.Contains(line, `"ready"`) {
				return fmt.Errorf("first line %q is not ready", line)
			}
			if _, err := toW.WriteString(`{"op":"shutdown"}` + "\n"); err != nil {
				return err
			}
			toW.Close()
			return cmd.Wait()
		}
		require.NoError(b, ready())
	}
	return ds
}

// restartsToReady runs a one-worker pool of noop-worker and kills its
// worker n times, timing each kill to the replacement's ready.
func restartsToReady(b *testing.B, n int) []time.Duration {
	ready := make(chan int, 1) // pids of ready workers
	pool, err := broker.NewPool(broker.Config{
		Spec: broker.Spec{
			Name: "noop", Cmd: []string{filepath.Join(bin, "noop-worker")},
			RestartReset: time.Nanosecond, // every restart is a first one: no backoff
		},
		Source: broker.SourceFuncs{
			NextFunc: func(ctx context.Context) (*broker.Job, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			DoneFunc: func(*broker.Job, broker.Outcome) {},
		},
		OnEvent: func(e broker.Event) {
			if e.Kind == broker.EventWorkerReady {
				ready <- e.PID
			}
		},
	})
	require.NoError(b, err)
	require.NoError(b, pool.Start(context.Background()))
	defer pool.Stop()
	pid := awaitReady(b, ready)
	var ds []time.Duration
	for range n {
		start := time.Now()
		require.NoError(b, syscall.Kill(pid, syscall.SIGKILL))
		next := awaitReady(b, ready)
		ds = append(ds, time.Since(start))
		require.NotEqual(b, pid, next)
		pid = next
	}
	return ds
}

func awaitReady(b *testing.B, ready <-chan int) int {
	select {
	case pid := <-ready:
		return pid
	case <-time.After(30 * time.Second):
		b.Fatal("no worker became ready")
		return 0
	}
}

// idleWorkerd starts a workerd with n idle noop workers and returns its RSS
// (MB) and the share of one core it used over window once they were ready.
func idleWorkerd(b *testing.B, n int, window time.Duration) (rss, cores float64) {
	c := newCluster(b)
	w := c.workerd("idle", fmt.Sprintf("name=idle,count=%d,cmd=%s", n, filepath.Join(bin, "noop-worker")))
	c.waitWorkers("idle", n)
	pids := map[string]int{"workerd": w.cmd.Process.Pid}
	before := usages(pids)
	measure := time.NewTimer(window) // the measurement window, not a wait for a condition
	<-measure.C
	after := usages(pids)
	used := after["workerd"].cpu - before["workerd"].cpu
	return rssMB(w.cmd.Process.Pid), used.Seconds() / window.Seconds()
}

// BenchmarkLogFlood measures issue 14's figure: workerd's CPU and the
// bytes of its log while one worker floods stderr ("yes flood") for 10s.
// The goal: under 10% of a core, the log bounded by the rate limit
// (1000 lines/s a pool, and a drop report every 10s).
func BenchmarkLogFlood(b *testing.B) {
	for range b.N {
		cores, logBytes, lines := floodWorkerd(b, 10*time.Second)
		b.ReportMetric(cores*100, "workerd_flood_cpu_%")
		b.ReportMetric(logBytes/10, "workerd_log_bytes/s")
		b.ReportMetric(float64(lines)/10, "workerd_log_lines/s")
		b.Logf("one worker flooding stderr for 10s: workerd %.1f%% of a core, log %.0f bytes/s, %.0f lines/s",
			cores*100, logBytes/10, float64(lines)/10)
	}
}

// floodWorkerd runs a workerd whose one worker writes "flood" lines to
// stderr as fast as it can, and returns the share of a core workerd used
// and the bytes and lines its log grew by over window.
func floodWorkerd(b *testing.B, window time.Duration) (cores, logBytes float64, lines int) {
	script := filepath.Join(b.TempDir(), "flood.sh")
	require.NoError(b, os.WriteFile(script, []byte("#!/bin/sh\nexec yes flood >&2\n"), 0o755))
	c := newCluster(b)
	w := c.workerd("flood", "name=flood,count=1,protocol=none,cmd="+script)
	c.waitWorkers("flood", 1)
	pids := map[string]int{"workerd": w.cmd.Process.Pid}
	before, size := usages(pids), len(w.output())
	measure := time.NewTimer(window) // the measurement window, not a wait for a condition
	<-measure.C
	after, out := usages(pids), w.output()
	grown := out[min(size, len(out)):]
	used := after["workerd"].cpu - before["workerd"].cpu
	return used.Seconds() / window.Seconds(), float64(len(grown)), strings.Count(grown, "\n")
}

// recycleThroughput runs 8 workers with 2ms jobs: benchJobs/5 jobs
// without recycling, then as many while a recycle of the pool follows
// another, and returns both rates and the number of full recycles.
func recycleThroughput(b *testing.B) (plain, recycling float64, recycles int) {
	c := newCluster(b)
	c.workerd("rec", fmt.Sprintf("name=slow,count=8,cmd=%s -delay 2ms", filepath.Join(bin, "noop-worker")))
	c.waitWorkers("slow", 8)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	const n = benchJobs / 5

	plain = countedRun(b, nc, js, "slow", n, nil)

	space, _ := subject.New("default")
	var done atomic.Int64
	recycleAll := func(stop <-chan struct{}) {
		recycled := make(chan struct{}, 1)
		sub, err := nc.Subscribe(space.PoolEvent("slow", wire.EventPoolRecycled), func(*nats.Msg) { recycled <- struct{}{} })
		if err != nil {
			b.Error(err)
			return
		}
		defer sub.Unsubscribe()
		cmd, _ := json.Marshal(wire.Command{Op: wire.CommandRecycle, Pool: "slow"})
		for {
			m, err := nc.Request(space.Control("rec"), cmd, 10*time.Second)
			if err != nil || !strings.Contains(string(m.Data), `"ok":true`) {
				b.Errorf("recycle refused: %v %s", err, msgData(m))
				return
			}
			select {
			case <-recycled:
				done.Add(1)
			case <-stop:
				return
			}
		}
	}
	recycling = countedRun(b, nc, js, "slow", n, recycleAll)
	return plain, recycling, int(done.Load())
}

// countedRun publishes n jobs of typ and times them until n succeeded
// events, running during(stop) meanwhile if not nil.
func countedRun(b *testing.B, nc *nats.Conn, js jetstream.JetStream, typ string, n int, during func(stop <-chan struct{})) float64 {
	space, _ := subject.New("default")
	var ok atomic.Int64
	all := make(chan struct{})
	sub, err := nc.Subscribe(space.JobEvent(typ, "succeeded"), func(*nats.Msg) {
		if ok.Add(1) == int64(n) {
			close(all)
		}
	})
	require.NoError(b, err)
	defer sub.Unsubscribe()
	require.NoError(b, sub.SetPendingLimits(-1, -1))
	require.NoError(b, nc.Flush())
	stop := make(chan struct{})
	finished := make(chan struct{})
	if during != nil {
		go func() {
			defer close(finished)
			during(stop)
		}()
	} else {
		close(finished)
	}
	start := time.Now()
	publishAsync(b, js, func(int) string { return space.Job(typ) }, n)
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d jobs succeeded", ok.Load(), n)
	}
	elapsed := time.Since(start)
	close(stop)
	<-finished
	return float64(n) / elapsed.Seconds()
}

func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}
