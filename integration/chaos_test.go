package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestChaos_NothingLost runs 20,000 jobs on two hosts while killing, with
// SIGKILL, random worker processes, each workerd once (restarted) and
// conductord itself twice (restarted on the same data). Every submitter retries
// until its job is queued, with an idempotency key, as a careful client
// does. At the end every job has succeeded exactly once with the right
// result, as its submitter sees it; the extra attempts that at-least-once
// delivery allowed are counted and logged.
func TestChaos_NothingLost(t *testing.T) {
	const n = 20_000
	c := newCluster(t)
	hosts := map[string]*proc{"host-a": c.workerd("host-a", squares(2)), "host-b": c.workerd("host-b", squares(2))}
	c.waitWorkers("squares", 4)

	cl, err := client.Connect(c.natsURL(), client.Config{},
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ids := make([]string, n)
	var submitted atomic.Int64
	var submitters sync.WaitGroup
	for w := range 8 {
		submitters.Go(func() {
			for i := w; i < n; i += 8 {
				ids[i] = submitUntilQueued(ctx, t, cl, i)
				submitted.Add(1)
			}
		})
	}

	// Chaos until every job is in: a kill every 200-400ms, of a random
	// worker but for conductord at a quarter and 60% of the submissions,
	// and one workerd and then the other at 40% and 80%.
	var kills struct {
		sync.Mutex
		workers, workerds, conductords int
	}
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		// A restart that fails (the harness's require) ends this goroutine:
		// end the submitters too rather than let them retry for 5 minutes.
		defer func() {
			if t.Failed() {
				cancel()
			}
		}()
		rnd := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
		for submitted.Load() < n && ctx.Err() == nil {
			select {
			case <-time.After(time.Duration(200+rnd.IntN(200)) * time.Millisecond):
			case <-ctx.Done():
				return
			}
			kills.Lock()
			done := float64(submitted.Load()) / n
			switch {
			case done >= 0.25 && kills.conductords == 0 || done >= 0.6 && kills.conductords == 1:
				kills.conductords++
				_ = c.conductor.cmd.Process.Kill()
				<-c.conductor.exited
				c.startConductor()
			case done >= 0.4 && kills.workerds == 0 || done >= 0.8 && kills.workerds == 1:
				name := []string{"host-a", "host-b"}[kills.workerds]
				kills.workerds++
				_ = hosts[name].cmd.Process.Kill()
				<-hosts[name].exited
				hosts[name] = c.workerd(name, squares(2))
			default:
				if killAWorker(hosts, rnd) {
					kills.workers++
				}
			}
			kills.Unlock()
		}
	}()
	submitters.Wait()
	<-chaosDone
	c.waitWorkers("squares", 4)

	// Every job, as its submitter sees it.
	extra, retried := 0, 0
	for i, id := range ids {
		j, err := cl.Wait(ctx, id)
		require.NoError(t, err, "job %d (%s)", i, id)
		require.Equal(t, client.StatusSucceeded, j.Status, "job %d: %+v", i, j)
		require.JSONEq(t, strconv.Itoa(i*i), string(j.Result), "job %d", i)
		if j.Attempts > 1 {
			retried++
			extra += j.Attempts - 1
		}
	}
	require.Len(t, uniq(ids), n, "one job per submission")
	t.Logf("%d jobs all succeeded once; kills: %d workers, %d workerds, %d conductords; %d jobs ran more than once (%d extra attempts: deliveries cut by a kill, allowed by at-least-once)",
		n, kills.workers, kills.workerds, kills.conductords, retried, extra)
}

// submitUntilQueued submits job i until it is queued, retrying through
// conductord restarts; the idempotency key makes the retries one job.
func submitUntilQueued(ctx context.Context, t *testing.T, cl *client.Client, i int) string {
	for {
		id, err := cl.Submit(ctx, "squares", i, client.WithIdempotencyKey("chaos-"+strconv.Itoa(i)))
		if err == nil {
			return id
		}
		if ctx.Err() != nil || errors.Is(err, client.ErrBadPayload) {
			t.Errorf("submit job %d: %v", i, err)
			return ""
		}
		select { // conductord is restarting: try again shortly
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// killAWorker SIGKILLs one worker process of a random host, found as a
// child of its workerd.
func killAWorker(hosts map[string]*proc, rnd *rand.Rand) bool {
	var pids []int
	for _, p := range hosts {
		pids = append(pids, children(p.cmd.Process.Pid)...)
	}
	if len(pids) == 0 {
		return false
	}
	return syscall.Kill(pids[rnd.IntN(len(pids))], syscall.SIGKILL) == nil
}

// children lists the child processes of pid, from every thread's
// /proc/<pid>/task/<tid>/children.
func children(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func uniq(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}
