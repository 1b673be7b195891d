package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestHosts_LostHostMarked: a host lost for good (its workerd SIGKILLed)
// stays in GET /v1/hosts, with lost set to when it was last heard, and
// its workers in GET /v1/workers in state lost, once three heartbeats are
// missed; /metrics counts the departure. Started again under the same
// id, the host is live again and no longer lost.
func TestHosts_LostHostMarked(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	lost := c.workerd("lost-host", squares(1))
	c.workerd("kept-host", squares(1))
	c.waitWorkers("squares", 2)
	require.NoError(t, lost.cmd.Process.Kill())
	<-lost.exited
	killedAt := time.Now()
	var hosts []client.Host
	require.Eventually(t, func() bool {
		hosts = nil
		c.do(http.MethodGet, "/v1/hosts", "", nil, &hosts)
		return len(hosts) == 2 && hosts[0].Host == "kept-host" && hosts[1].Host == "lost-host" && !hosts[1].Lost.IsZero()
	}, 10*time.Second, 50*time.Millisecond, "the lost host listed lost: %+v", hosts)
	t.Logf("the host was listed lost %.2fs after its workerd's SIGKILL", time.Since(killedAt).Seconds())
	require.True(t, hosts[0].Lost.IsZero(), "the kept host is live")
	require.WithinDuration(t, killedAt, hosts[1].Lost, 3*time.Second, "lost: when it was last heard")

	var ws []client.Worker
	c.do(http.MethodGet, "/v1/workers", "", nil, &ws)
	states := map[string]string{}
	for _, w := range ws {
		states[w.Host] = w.State
	}
	require.Equal(t, client.WorkerLost, states["lost-host"], "%+v", ws)
	require.NotEqual(t, client.WorkerLost, states["kept-host"], "%+v", ws)
	// A lost host runs nothing: /v1/pools counts the live workers only.
	require.Equal(t, 1, c.pool("squares").Workers)

	resp, err := http.Get(c.url("/metrics"))
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(raw), `conductor_hosts_departed_total{reason="silent"} 1`)

	// Back: live, and not lost any more.
	c.workerd("lost-host", squares(1))
	require.Eventually(t, func() bool {
		hosts = nil
		c.do(http.MethodGet, "/v1/hosts", "", nil, &hosts)
		return len(hosts) == 2 && hosts[0].Lost.IsZero() && hosts[1].Lost.IsZero()
	}, 10*time.Second, 50*time.Millisecond, "the host back is live: %+v", hosts)
}

// TestHosts_LostHostJobsComeBackAfterTheLease: the jobs a host held when
// it was killed go to another host once their lease (workerd --job-lease)
// has passed since its last extension, not the default 30s.
func TestHosts_LostHostJobsComeBackAfterTheLease(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	slow := fmt.Sprintf("name=slow,count=1,cmd=%s -delay 1s", filepath.Join(bin, "noop-worker"))
	const lease = 3 * time.Second
	lost := start(t, "workerd", "--conductor", c.natsURL(), "--host-id", "lost-host", "--job-lease", lease.String(), "--pool", slow)
	c.waitWorkers("slow", 1)
	cl := c.goClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := cl.Submit(ctx, "slow", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, w := range c.workers() {
			if w.Host == "lost-host" && w.Job == id {
				return true
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "the lost host runs the job")
	require.NoError(t, lost.cmd.Process.Kill())
	<-lost.exited
	killed := time.Now()
	start(t, "workerd", "--conductor", c.natsURL(), "--host-id", "kept-host", "--job-lease", lease.String(), "--pool", slow)
	j, err := cl.Wait(ctx, id)
	require.NoError(t, err)
	took := time.Since(killed)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.Equal(t, "kept-host", j.History[len(j.History)-1].Host)
	t.Logf("a lost host's job ended on another host %s after the kill (lease %s, a 1s job)", took.Round(time.Millisecond), lease)
	require.Less(t, took, lease+10*time.Second, "within the lease, not the default 30s")
}
