package integration

import (
	"io"
	"net/http"
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
