package integration

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
)

// BenchmarkQueue measures issue 4's figures in one run:
//   - queue_1M_s, conductord_1M_MB: the time to queue 1,000,000 jobs of a
//     type no worker serves (asynchronous JetStream publishes, as services
//     submit over NATS), and conductord's RSS once they are queued, which
//     /v1/pools must report;
//   - e2e_file_jobs/s and e2e_memory_jobs/s: no-op jobs through 2 workers
//     with conductord's default file storage and with --memory.
//
// Run it with make bench; figures go to docs/benchmarks.md.
func BenchmarkQueue(b *testing.B) {
	for range b.N {
		const million = 1_000_000
		c := newCluster(b)
		nc, err := nats.Connect(c.natsURL())
		require.NoError(b, err)
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
		require.NoError(b, err)
		space, _ := subject.New("default")
		rss0 := rssMB(c.conductor.cmd.Process.Pid)
		start := time.Now()
		publishAsync(b, js, func(int) string { return space.Job("later") }, million)
		queued := time.Since(start)
		require.Eventually(b, func() bool { return c.pool("later").Queued == million }, time.Minute, 100*time.Millisecond)
		rss := rssMB(c.conductor.cmd.Process.Pid)
		nc.Close()
		b.ReportMetric(queued.Seconds(), "queue_1M_s")
		b.ReportMetric(million/queued.Seconds(), "queue_jobs/s")
		b.ReportMetric(rss0, "conductord_empty_MB")
		b.ReportMetric(rss, "conductord_1M_MB")

		file := e2eRun(b, c)
		mem := e2eRun(b, newCluster(b, withArgs("--memory")))
		b.ReportMetric(file, "e2e_file_jobs/s")
		b.ReportMetric(mem, "e2e_memory_jobs/s")
		b.Logf("1,000,000 jobs queued in %s (%.0f/s); conductord RSS %.1f MB empty, %.1f MB with them queued; e2e no-op jobs/s: file %.0f, memory %.0f",
			queued.Round(time.Millisecond), million/queued.Seconds(), rss0, rss, file, mem)
	}
}

// e2eRun runs benchJobs no-op jobs through one workerd of 2 workers on c.
func e2eRun(b *testing.B, c *cluster) float64 {
	c.workerd("e2e", fmt.Sprintf("name=noop,count=2,cmd=%s", filepath.Join(bin, "noop-worker")))
	c.waitWorkers("noop", 2)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	return endToEnd(b, nc, js, "noop")
}

// BenchmarkHostLoss measures the redelivery of a job whose host vanished:
// workerd host-a is SIGKILLed (its workers die with it) while it runs a
// job of 2s; host-b, already up, runs the job once its lease (AckWait,
// 30s, extended every 10s) runs out. host_loss_s is the time from the kill
// to the job's success.
func BenchmarkHostLoss(b *testing.B) {
	for range b.N {
		c := newCluster(b)
		slow := fmt.Sprintf("name=slow,count=1,cmd=%s -delay 2s", filepath.Join(bin, "noop-worker"))
		a := c.workerd("host-a", slow)
		c.waitWorkers("slow", 1)
		client := c.goClient()
		ctx := b.Context()
		id, err := client.Submit(ctx, "slow", 1)
		require.NoError(b, err)
		require.Eventually(b, func() bool {
			j, err := client.Job(ctx, id)
			return err == nil && j.Status == "running"
		}, 30*time.Second, 10*time.Millisecond)
		c.workerd("host-b", slow)
		c.waitWorkers("slow", 2)
		start := time.Now()
		require.NoError(b, a.cmd.Process.Kill())
		j, err := client.Wait(ctx, id)
		require.NoError(b, err)
		lost := time.Since(start)
		require.Equal(b, "succeeded", string(j.Status))
		require.Equal(b, "host-b", j.History[len(j.History)-1].Host)
		b.ReportMetric(lost.Seconds(), "host_loss_s")
		b.Logf("job of a SIGKILLed host done on another host %s after the kill (lease 30s)", lost.Round(time.Millisecond))
	}
}
