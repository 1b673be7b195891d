package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// onNATS is a conductord started with --nats-url: c.natsAddr is unused,
// c.httpAddr its API.
func onNATS(t testing.TB, urls string, args ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, data: t.TempDir(), httpAddr: freeAddr(t)}
	c.startOnNATS(urls, args...)
	return c
}

// startOnNATS starts c's conductord with --nats-url urls (again, after a
// kill: the same --data and HTTP address) and waits until it answers.
func (c *cluster) startOnNATS(urls string, args ...string) {
	c.t.Helper()
	c.conductor = start(c.t, "conductord", append([]string{"--data", c.data, "--nats-url", urls, "--http", c.httpAddr}, args...)...)
	c.waitHealthy(60 * time.Second)
}

// leader reads GET /v1/leader.
func (c *cluster) leader() (conductor.LeaderInfo, bool) {
	var li conductor.LeaderInfo
	resp, err := http.Get(c.url("/v1/leader"))
	if err != nil {
		return li, false
	}
	defer resp.Body.Close()
	return li, resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&li) == nil
}

// leaderOfTwo waits until a and b count each other and one of them
// leads, and returns the leader first.
func leaderOfTwo(t *testing.T, a, b *cluster) (lead, other *cluster) {
	t.Helper()
	require.Eventually(t, func() bool {
		la, oka := a.leader()
		lb, okb := b.leader()
		switch {
		case !oka || !okb || la.Members != 2 || lb.Members != 2:
			return false
		case la.Leading && !lb.Leading:
			lead, other = a, b
		case lb.Leading && !la.Leading:
			lead, other = b, a
		default:
			return false
		}
		return true
	}, 15*time.Second, 20*time.Millisecond, "one of two leads")
	return lead, other
}

// TestTwoConductords_LeaderKilled: two conductord processes on a 3-server
// NATS cluster (R3), one workerd host, jobs submitted steadily over NATS.
// The leader is SIGKILLed: the other leads within a lease and a third;
// no job is lost or run twice; the counts, taken over by the new leader,
// count every job exactly once (the ends the killed one held come back
// after their lease).
func TestTwoConductords_LeaderKilled(t *testing.T) {
	t.Parallel()
	urls := natstest.URLs(natstest.Cluster(t, 3))
	const lease = time.Second
	a := onNATS(t, urls, "--leader-lease", lease.String())
	b := onNATS(t, urls, "--leader-lease", lease.String())
	w := &cluster{t: t, httpAddr: a.httpAddr}
	start(t, "workerd", "--conductor", urls, "--host-id", "h1", "--pool", squares(2))
	w.waitWorkers("squares", 2)

	lead, other := leaderOfTwo(t, a, b)

	cl, err := client.Connect(urls, client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Jobs flow before, across and after the kill.
	var (
		mu  sync.Mutex
		ids []string
	)
	stop := make(chan struct{})
	var submitted atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id, err := cl.Submit(ctx, "squares", i)
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
			submitted.Add(1)
		}
	})
	require.Eventually(t, func() bool { return submitted.Load() >= 200 }, 30*time.Second, 10*time.Millisecond)

	pids := func() map[int]bool {
		m := map[int]bool{}
		for _, wk := range (&cluster{t: t, httpAddr: other.httpAddr}).workers() {
			m[wk.PID] = true
		}
		return m
	}
	before := pids()
	require.Len(t, before, 2)
	killed := time.Now()
	require.NoError(t, lead.conductor.cmd.Process.Signal(syscall.SIGKILL))
	<-lead.conductor.exited
	require.Eventually(t, func() bool {
		li, ok := other.leader()
		return ok && li.Leading
	}, lease*10, 5*time.Millisecond, "the survivor leads")
	took := time.Since(killed)
	t.Logf("fail-over after SIGKILL of the leader: %s (lease %s)", took.Round(time.Millisecond), lease)
	require.Less(t, took, 3*lease, "within a lease and a third, and the ticks")

	require.Eventually(t, func() bool { return submitted.Load() >= 600 }, 60*time.Second, 10*time.Millisecond)
	close(stop)
	wg.Wait()

	mu.Lock()
	all := append([]string(nil), ids...)
	mu.Unlock()
	for _, id := range all {
		j, err := cl.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status, "job %s", id)
		require.Len(t, j.History, 1, "job %s ran once", id)
	}
	require.Equal(t, before, pids(), "no worker stopped or restarted")
	// The counts: every job once, on the survivor (the ends the killed
	// leader held come back after their 30s lease).
	o := &cluster{t: t, httpAddr: other.httpAddr}
	require.Eventually(t, func() bool { return o.pool("squares").Succeeded == uint64(len(all)) },
		90*time.Second, 100*time.Millisecond, "every job counted once: %d", len(all))
	counted := time.Since(killed)
	t.Logf("jobs %d; all counted %s after the kill", len(all), counted.Round(time.Millisecond))
}
