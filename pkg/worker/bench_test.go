package worker_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// BenchmarkProcess_NoopJobs runs b.N no-op jobs through one worker process
// as workerd does with a short-job pool: up to DefaultPrefetch jobs queued
// behind the running one, refilled once half are answered, each refill in
// one write. It reports the worker process's own CPU time and context
// switches per job (cpu-ns/job, csw/job): what the SDK costs the machine
// per job, apart from the handler.
func BenchmarkProcess_NoopJobs(b *testing.B) {
	c := startFake(b, "noop", true)
	ready := <-c.msgs
	require.Equal(b, proto.OpReady, ready.Op)
	window := 1 + worker.DefaultPrefetch
	var (
		sent, answered int
		batch          []byte
	)
	b.ResetTimer()
	for answered < b.N {
		if outstanding := sent - answered; sent < b.N && outstanding <= window/2 {
			batch = batch[:0]
			for ; sent < b.N && sent-answered < window; sent++ {
				batch = fmt.Appendf(batch, `{"op":"job","id":"j%d","type":"noop","payload":%d,"attempt":1}`+"\n", sent, sent)
			}
			_, err := c.in.Write(batch)
			require.NoError(b, err)
		}
		select {
		case m, ok := <-c.msgs:
			require.True(b, ok, "the worker closed its output")
			require.Equal(b, proto.OpDone, m.Op, "%+v", m)
			require.Empty(b, m.Error)
			answered++
		case <-time.After(timeout):
			b.Fatalf("%d of %d jobs answered within %v of the last answer", answered, b.N, timeout)
		}
	}
	b.StopTimer()
	_, err := c.in.Write([]byte(`{"op":"shutdown"}` + "\n"))
	require.NoError(b, err)
	require.NoError(b, c.wait(b))
	ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		b.Skip("no resource usage on this system")
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/job")
	b.ReportMetric(float64(ru.Nvcsw+ru.Nivcsw)/float64(b.N), "csw/job")
}
