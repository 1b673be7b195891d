package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// command sends a pool command to workerd host over NATS and returns its
// reply.
func (c *cluster) command(host string, cmd wire.Command) wire.CommandReply {
	c.t.Helper()
	nc, err := nats.Connect(c.natsURL())
	require.NoError(c.t, err)
	defer nc.Close()
	space, _ := subject.New("default")
	data, _ := json.Marshal(cmd)
	m, err := nc.Request(space.Control(host), data, 10*time.Second)
	require.NoError(c.t, err)
	var r wire.CommandReply
	require.NoError(c.t, json.Unmarshal(m.Data, &r))
	return r
}

// waitVersion waits until n workers of pool run command version v.
func (c *cluster) waitVersion(pool string, n, v int) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		up := 0
		for _, w := range c.workers() {
			if w.Pool == pool && w.Version == v && (w.State == "ready" || w.State == "busy") {
				up++
			}
		}
		return up == n
	}, 30*time.Second, 20*time.Millisecond, "want %d %s workers of version %d", n, pool, v)
}

// TestWorkerd_RecycleUnderLoadLosesNoJob recycles a pool of 2 again and
// again while 3,000 jobs run: every job succeeds exactly once with the
// right result.
func TestWorkerd_RecycleUnderLoadLosesNoJob(t *testing.T) {
	c := newCluster(t)
	c.workerd("rec", squares(2))
	c.waitWorkers("squares", 2)

	const n = 3000
	ev := watchEvents(t, c, "squares", n)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	defer nc.Close()
	space, _ := subject.New("default")
	recycled, err := nc.SubscribeSync(space.PoolEvent("squares", wire.EventPoolRecycled))
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	defer halt() // on a failure too: the goroutine ends with the test
	recycles := make(chan int, 1)
	recycle, _ := json.Marshal(wire.Command{Op: wire.CommandRecycle, Pool: "squares"})
	go func() {
		count := 0
		defer func() { recycles <- count }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Not c.command: its require must not run off the test's goroutine.
			var r wire.CommandReply
			m, err := nc.Request(space.Control("rec"), recycle, 10*time.Second)
			if err == nil {
				err = json.Unmarshal(m.Data, &r)
			}
			if err != nil || !r.OK {
				t.Errorf("recycle refused or unanswered: %v %+v", err, r)
				return
			}
			for { // every worker replaced before the next recycle
				if _, err := recycled.NextMsg(100 * time.Millisecond); err == nil {
					break
				}
				select {
				case <-stop:
					return
				default:
				}
			}
			count++
		}
	}()
	ids := c.submitMany(context.Background(), "squares", n)
	select {
	case <-ev.all:
	case <-time.After(3 * time.Minute):
		t.Fatalf("only %d of %d jobs ended", ev.ended(), n)
	}
	halt()
	count := <-recycles
	checkSquares(t, c, ids)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, id := range ids {
		require.Equal(t, map[wire.Status]int{wire.StatusSucceeded: 1}, ev.byID[id], "job %s", id)
	}
	require.Positive(t, count)
	t.Logf("%d recycles of 2 workers during %d jobs", count, n)
}

// TestWorkerd_ReloadOnSIGHUP changes the config file of a running workerd
// and sends SIGHUP: the pool is resized and its workers replaced with the
// new environment; a broken file then changes nothing.
func TestWorkerd_ReloadOnSIGHUP(t *testing.T) {
	c := newCluster(t)
	path := filepath.Join(t.TempDir(), "pools.yaml")
	write := func(body string) { require.NoError(t, os.WriteFile(path, []byte(body), 0o600)) }
	cmd := filepath.Join(bin, "squares-worker")
	write("pools:\n  - name: squares\n    count: 1\n    cmd: " + cmd + "\n")
	w := start(t, "workerd", "--conductor", c.natsURL(), "--host-id", "hup", "--config", path)
	c.waitVersion("squares", 1, 1)

	write("pools:\n  - name: squares\n    count: 2\n    env: [RELOADED=1]\n    cmd: " + cmd + "\n" +
		"  - name: noop\n    cmd: " + filepath.Join(bin, "noop-worker") + "\n")
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGHUP))
	c.waitVersion("squares", 2, 2)
	c.waitWorkers("noop", 1)
	var j struct{ Result json.RawMessage }
	require.Equal(t, 200, c.do("POST", "/v1/jobs/squares?wait=10s", "5", nil, &j))
	require.JSONEq(t, "25", string(j.Result))

	write("pools:\n  - name: squares\n    count: soon\n    cmd: x\n")
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(w.output(), "config not reloaded") }, 10*time.Second, 20*time.Millisecond)
	require.Contains(t, w.output(), `is not a whole number`)
	c.waitVersion("squares", 2, 2)
}

// TestWorkerd_JobTimeout runs jobs that take 2s in a pool whose
// job_timeout is 200ms, and one with its own ?timeout=: each attempt is
// cancelled in time, retried, and the job ends dead with the reason; the
// workers, which honour the cancel, are not replaced.
func TestWorkerd_JobTimeout(t *testing.T) {
	c := newCluster(t)
	slow := filepath.Join(bin, "noop-worker") + " -delay 2s"
	c.workerd("to", "name=slow,count=1,job_timeout=200ms,max_attempts=2,cmd="+slow,
		"name=slower,count=1,max_attempts=1,cmd="+slow)
	c.waitWorkers("slow", 1)
	c.waitWorkers("slower", 1)
	pids := map[string]int{}
	for _, w := range c.workers() {
		pids[w.Pool] = w.PID
	}

	var j struct {
		Status   string
		Attempts int
		Error    string
		History  []wire.Attempt
	}
	require.Equal(t, 200, c.do("POST", "/v1/jobs/slow?wait=30s", "1", nil, &j))
	require.Equal(t, "dead", j.Status)
	require.Equal(t, 2, j.Attempts)
	require.Contains(t, j.Error, "job timed out after 200ms (worker: job cancelled")
	require.Len(t, j.History, 2)
	for _, a := range j.History {
		require.Less(t, a.EndedAt.Sub(a.StartedAt), 2*time.Second, "the attempt was cut short")
	}

	require.Equal(t, 200, c.do("POST", "/v1/jobs/slower?wait=30s&timeout=100ms", "1", nil, &j))
	require.Equal(t, "dead", j.Status)
	require.Contains(t, j.Error, "job timed out after 100ms")
	require.Equal(t, 400, c.do("POST", "/v1/jobs/slower?timeout=soon", "1", nil, nil))

	ws := c.workers()
	require.Len(t, ws, len(pids))
	for _, w := range ws {
		require.Equal(t, pids[w.Pool], w.PID, "a worker that honours cancel is kept")
	}
}

// TestHTTP_PoolCommands steers a real workerd through conductord's HTTP
// API and conductorctl: resize, drain, resume, and a refused upgrade.
func TestHTTP_PoolCommands(t *testing.T) {
	c := newCluster(t)
	c.workerd("web-1", squares(1))
	c.waitWorkers("squares", 1)

	var answer struct {
		Hosts []struct {
			Host  string
			OK    bool
			Error string
		}
	}
	require.Equal(t, 202, c.do("POST", "/v1/pools/squares/resize", `{"count":3}`, nil, &answer))
	require.Len(t, answer.Hosts, 1)
	require.True(t, answer.Hosts[0].OK)
	c.waitWorkers("squares", 3)

	require.Equal(t, 202, c.do("POST", "/v1/pools/squares/drain?host=web-1", `{"timeout":"5s"}`, nil, nil))
	require.Eventually(t, func() bool { return c.pool("squares").State == "drained" }, 30*time.Second, 20*time.Millisecond)

	ctl := start(t, "conductorctl", "--server", c.url(""), "resume", "squares")
	select {
	case <-ctl.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("conductorctl resume did not end within 30s")
	}
	require.NoError(t, ctl.err, ctl.output())
	require.Contains(t, ctl.output(), "web-1  accepted")
	c.waitWorkers("squares", 3)

	require.Equal(t, 502, c.do("POST", "/v1/pools/squares/upgrade", `{"cmd":"/no/such/worker"}`, nil, &answer))
	require.Contains(t, answer.Hosts[0].Error, `upgrade refused by host web-1: command "/no/such/worker" is not one this host allows for pool squares`)
	require.Equal(t, 404, c.do("POST", "/v1/pools/nope/recycle", "", nil, nil))
}

// A host drained holds no job: the jobs queued after the drain run on the
// other host at once, instead of waiting, held ahead by the drained host,
// until its workerd stops; and a drain under load gives back what it held.
func TestCluster_DrainGivesJobsToTheOtherHost(t *testing.T) {
	c := newCluster(t)
	c.workerd("host-a", squares(2))
	c.workerd("host-b", squares(2))
	c.waitWorkers("squares", 4)
	cl, err := client.Connect(c.natsURL(), client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	submit := func(n int) *client.Batch {
		payloads := make([]json.RawMessage, n)
		for i := range payloads {
			payloads[i] = json.RawMessage(strconv.Itoa(i))
		}
		b, err := cl.SubmitBatch(ctx, "squares", payloads)
		require.NoError(t, err)
		return b
	}
	ended := func(b *client.Batch, within time.Duration, what string) time.Duration {
		start := time.Now()
		require.Eventually(t, func() bool {
			got, err := cl.Batch(ctx, b.ID)
			return err == nil && got.Succeeded == b.Total
		}, within, 10*time.Millisecond, "%s: every job ran: %+v", what, c.pool("squares"))
		return time.Since(start)
	}

	// Under load: both hosts hold jobs ahead (short jobs) when host-b drains.
	const jobs = 3000
	load := submit(jobs)
	require.Eventually(t, func() bool { return c.pool("squares").Succeeded >= 300 }, time.Minute, 5*time.Millisecond)
	drained := time.Now()
	require.Equal(t, 202, c.do("POST", "/v1/pools/squares/drain?host=host-b", `{"timeout":"5s"}`, nil, nil))
	ended(load, time.Minute, "under load")
	t.Logf("under load: the last of %d jobs ended %s after host-b's drain", jobs, time.Since(drained).Round(time.Millisecond))

	// After the drain: host-b takes none of the new jobs, host-a all.
	after := submit(jobs)
	took := ended(after, 30*time.Second, "after the drain")
	t.Logf("after the drain: %d jobs ran on host-a in %s", jobs, took.Round(time.Millisecond))
	p := c.pool("squares")
	require.Zero(t, p.Queued)
	require.Zero(t, p.Held)
	require.Zero(t, p.Running)
}
