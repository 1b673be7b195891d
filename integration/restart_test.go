package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// A restarted conductord finds its queue where it left it, and workerd,
// which reconnects on its own, carries on.
func TestCluster_ConductorRestart(t *testing.T) {
	c := newCluster(t)
	w := c.workerd("host-a", squares(1))
	c.waitWorkers("squares", 1)

	var j client.Job
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/squares?wait=10s", "3", nil, &j))
	require.Equal(t, client.StatusSucceeded, j.Status)
	var queued struct{ ID string }
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/jobs/later", "1", nil, &queued))

	t0 := time.Now()
	c.conductor.stop(t, 20*time.Second)
	t.Logf("stopped after %s", time.Since(t0))
	c.startConductor()
	t.Logf("started after %s", time.Since(t0))

	// The state and the queue survived.
	var got client.Job
	require.Equal(t, http.StatusOK, c.do(http.MethodGet, "/v1/jobs/"+j.ID, "", nil, &got))
	require.JSONEq(t, "9", string(got.Result))
	require.Equal(t, int64(1), c.pool("later").Queued)

	// workerd reconnected and takes jobs again.
	c.waitWorkers("squares", 1)
	t.Logf("workers back after %s", time.Since(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Connect(c.natsURL(), client.Config{})
	require.NoError(t, err)
	defer cl.Close()
	done, err := cl.SubmitAndWait(ctx, "squares", 5)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, done.Status)
	require.JSONEq(t, "25", string(done.Result))
	t.Logf("job done after %s", time.Since(t0))
	require.NotContains(t, w.output(), "level=ERROR")
}

func TestWorkerd_BadPoolSpec(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ spec, want string }{
		{"name=squares,count=two,cmd=x", "count"},
		{"count=2,cmd=x", "name"},
		{"name=squares,count=2", "cmd"},
		{"name=a.b,cmd=x", "a.b"},
		{"name=squares,colour=red,cmd=x", "colour"},
	} {
		p := start(t, "workerd", "--conductor", "nats://127.0.0.1:1", "--pool", tc.spec)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("workerd --pool %q did not exit", tc.spec)
		}
		require.Error(t, p.err, tc.spec)
		out := p.output()
		require.True(t, strings.Contains(out, tc.want), "workerd --pool %q said %q", tc.spec, out)
	}
}

func TestWorkerd_ConfigFile(t *testing.T) {
	c := newCluster(t)
	path := filepath.Join(t.TempDir(), "pools.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`pools:
  - name: squares
    count: 2
    cmd: `+filepath.Join(bin, "squares-worker")+`
`), 0o600))
	start(t, "workerd", "--conductor", c.natsURL(), "--host-id", "cfg", "--config", path)
	c.waitWorkers("squares", 2)
	var j client.Job
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/squares?wait=10s", "4", nil, &j))
	require.JSONEq(t, "16", string(j.Result))

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("pools:\n  - name: squares\n    stop_timeout: soon\n    cmd: x\n"), 0o600))
	p := start(t, "workerd", "--conductor", c.natsURL(), "--config", bad)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("workerd with a bad config did not exit")
	}
	require.Error(t, p.err)
	require.Contains(t, p.output(), `pool "squares": stop_timeout: "soon" is not a duration`)
}

// A read of a job's state (Client.Job, and so Client.Wait) in flight when
// conductord dies returns soon after it is back: the request is lost with
// the server and nats.go does not fail a request in flight on a
// reconnect, so the Client bounds each read and makes it again. Found by
// TestChaos_NothingLost (CHAOS=long): a wait hung for minutes after a
// conductord kill while it read under the caller's context alone.
func TestClient_ReadInFlightAtConductordKill(t *testing.T) {
	c := newCluster(t)
	c.workerd("host-a", squares(1))
	c.waitWorkers("squares", 1)
	cl, err := client.Connect(c.natsURL(), client.Config{}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j, err := cl.SubmitAndWait(ctx, "squares", 3)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)

	// Readers read the ended job's state over and over, as waits do,
	// while conductord is killed and started again on its data: a read in
	// flight at the kill is lost with it.
	const readers = 32
	var returned [readers]atomic.Int64 // when each reader's last read returned, in ns since the Unix epoch
	rctx, rcancel := context.WithTimeout(ctx, 90*time.Second)
	defer rcancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer rcancel()
	for r := range readers {
		wg.Go(func() {
			for rctx.Err() == nil {
				_, _ = cl.Job(rctx, j.ID)
				returned[r].Store(time.Now().UnixNano())
			}
		})
	}
	require.Eventually(t, func() bool {
		for r := range readers {
			if returned[r].Load() == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "every reader reads")
	require.NoError(t, c.conductor.cmd.Process.Kill())
	<-c.conductor.exited
	c.startConductor()
	restarted := time.Now()

	// The job's state is there to read again: each reader should get an
	// answer (or an error) within seconds of the restart.
	var stuck []int
	ok := assert.Eventually(t, func() bool {
		stuck = stuck[:0]
		for r := range readers {
			if returned[r].Load() < restarted.UnixNano() {
				stuck = append(stuck, r)
			}
		}
		return len(stuck) == 0
	}, 20*time.Second, 50*time.Millisecond)
	if !ok {
		t.Fatalf("%d of %d reads of an ended job's state begun before conductord's kill have not returned 20s after its restart (they hang until their context ends)", len(stuck), readers)
	}
}

// A SIGKILL of conductord right after a burst of jobs ended loses none of
// their counts and counts none twice: the ends taker acks the ends only
// once their counts are saved with their sequences. Found by an outside
// review: conductord acked the ends once counted in memory and saved the
// counts every second; killed right after a 3000-job batch, it came back
// 513 succeeded short, for good, and the Prometheus counter went back.
// Killed mid-burst, it has ends counted and not acked, which come back
// after their ack wait.
func TestConductord_KillKeepsJobCounts(t *testing.T) {
	const n = 3000
	for _, tc := range []struct {
		name string
		kill func(c *cluster, batch string) bool // when to kill conductord
	}{
		{"after the batch", func(c *cluster, batch string) bool {
			// Every job's state says it succeeded: the ends of the last
			// jobs are on their way, counted, or saved and not acked.
			var got client.Batch
			c.do(http.MethodGet, "/v1/batches/"+batch, "", nil, &got)
			return got.Succeeded == n
		}},
		{"mid-burst", func(c *cluster, _ string) bool {
			return c.pool("squares").Succeeded >= n/3
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			c.workerd("host-a", squares(4))
			c.waitWorkers("squares", 4)
			var lines strings.Builder
			for i := range n {
				fmt.Fprintln(&lines, i)
			}
			var b client.Batch
			require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/batches/squares", lines.String(), nil, &b))

			require.True(t, pollEvery(time.Minute, 5*time.Millisecond, func() bool { return tc.kill(c, b.ID) }), "batch %s", b.ID)
			shown := c.pool("squares").Succeeded
			require.NoError(t, c.conductor.cmd.Process.Kill())
			<-c.conductor.exited
			c.startConductor()
			t.Logf("succeeded shown at the kill: %d of %d", shown, n)
			require.GreaterOrEqual(t, c.pool("squares").Succeeded, shown, "the counts went back")
			c.checkCounts(b.ID, n)
		})
	}
}

// checkCounts waits until the jobs of batch, n, have ended and conductord
// has taken all the ends (those it had not acked at a kill come back
// after their ack wait), and checks that the succeeded count, in
// /v1/pools and /metrics, is the number of succeeded states.
func (c *cluster) checkCounts(batch string, n int) {
	t := c.t
	t.Helper()
	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, _ := subject.New("default")
	ctx := context.Background()
	var pending uint64
	var got client.Batch
	require.True(t, pollEvery(2*time.Minute, 100*time.Millisecond, func() bool {
		cons, err := js.Consumer(ctx, space.EndsStream(), subject.EndsConsumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false
		}
		pending = info.NumPending + uint64(info.NumAckPending)
		c.do(http.MethodGet, "/v1/batches/"+batch, "", nil, &got)
		return pending == 0 && got.Succeeded == n && c.pool("squares").Succeeded >= uint64(n)
	}), "ends pending %d, succeeded states %d, counted %d", pending, got.Succeeded, c.pool("squares").Succeeded)
	require.Equal(t, uint64(n), c.pool("squares").Succeeded, "succeeded counted: as many as the succeeded states")

	resp, err := http.Get(c.url("/metrics"))
	require.NoError(t, err)
	defer resp.Body.Close()
	metrics, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(metrics), fmt.Sprintf(`conductor_jobs_ended_total{status="succeeded",type="squares"} %d`, n))
}

// pollEvery reports whether cond holds within limit, checking it every
// interval.
func pollEvery(limit, interval time.Duration, cond func() bool) bool {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.After(limit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return false
		}
	}
	return true
}
