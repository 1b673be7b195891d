package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/pkg/client"
)

// submitHTTP queues payload i of squares through the first of apis that
// accepts it, as a load balancer that tries the next backend on a refused
// connection or a 5xx would; the error says why none did.
func submitHTTP(hc *http.Client, apis []string, i int) (string, error) {
	var why []string
	for k := range apis {
		api := apis[(i+k)%len(apis)]
		resp, err := hc.Post("http://"+api+"/v1/jobs/squares", "application/json", strings.NewReader(fmt.Sprint(i)))
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			why = append(why, fmt.Sprintf("%s: %d %s", api, resp.StatusCode, body))
			continue
		}
		var out struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(body, &out); err != nil || out.ID == "" {
			return "", fmt.Errorf("%s: %d %s", api, resp.StatusCode, body)
		}
		return out.ID, nil
	}
	return "", fmt.Errorf("no conductord took job %d: %s", i, strings.Join(why, "; "))
}

// TestRollingUpgrade: two conductords and two workerd hosts on a 3-server
// NATS cluster; while jobs are submitted steadily over HTTP, each
// conductord and then each workerd is stopped (SIGTERM) and started
// again, one at a time, as a rolling upgrade does. No submission fails
// (each is taken by one conductord or the other), every job succeeds, and
// each is counted once.
func TestRollingUpgrade(t *testing.T) {
	t.Parallel()
	urls := natstest.URLs(natstest.Cluster(t, 3))
	lease := "1s"
	conductords := []*cluster{onNATS(t, urls, "--leader-lease", lease), onNATS(t, urls, "--leader-lease", lease)}
	apis := []string{conductords[0].httpAddr, conductords[1].httpAddr}
	hostArgs := func(id string) []string {
		return []string{"--conductor", urls, "--host-id", id, "--pool", squares(2)}
	}
	hosts := []*proc{start(t, "workerd", hostArgs("h1")...), start(t, "workerd", hostArgs("h2")...)}
	view := &cluster{t: t, httpAddr: apis[0]}
	view.waitWorkers("squares", 4)

	hc := &http.Client{Timeout: 10 * time.Second}
	var (
		mu     sync.Mutex
		ids    []string
		failed []error
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range 2 {
		wg.Go(func() {
			for i := s; ; i += 2 {
				select {
				case <-stop:
					return
				default:
				}
				id, err := submitHTTP(hc, apis, i)
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					ids = append(ids, id)
				}
				mu.Unlock()
			}
		})
	}
	submitted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ids)
	}
	more := func(n int) {
		t.Helper()
		want := submitted() + n
		require.Eventually(t, func() bool { return submitted() >= want }, 30*time.Second, 10*time.Millisecond, "%d more jobs queued", n)
	}
	more(50)

	for k, c := range conductords {
		began := time.Now()
		c.conductor.stop(t, 20*time.Second)
		c.conductor = start(t, "conductord", "--data", c.data, "--nats-url", urls, "--http", c.httpAddr, "--leader-lease", lease)
		c.waitHealthy(60 * time.Second)
		t.Logf("conductord %d upgraded in %s", k+1, time.Since(began).Round(time.Millisecond))
		more(50)
	}
	for k, h := range hosts {
		began := time.Now()
		h.stop(t, 40*time.Second)
		hosts[k] = start(t, "workerd", hostArgs(fmt.Sprintf("h%d", k+1))...)
		view.waitWorkers("squares", 4)
		t.Logf("workerd h%d upgraded in %s", k+1, time.Since(began).Round(time.Millisecond))
		more(50)
	}
	close(stop)
	wg.Wait()
	require.Empty(t, failed, "no submission failed")

	cl, err := client.Connect(urls, client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	again := 0
	for _, id := range ids {
		j, err := cl.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status, "job %s: %+v", id, j.History)
		if len(j.History) > 1 {
			again++
		}
	}
	t.Logf("%d jobs submitted over HTTP through the upgrades, none refused; %d ran more than once (each attempt in its history)", len(ids), again)
	for _, c := range conductords {
		v := &cluster{t: t, httpAddr: c.httpAddr}
		require.Eventually(t, func() bool { return v.pool("squares").Succeeded == uint64(len(ids)) },
			90*time.Second, 100*time.Millisecond, "every job counted once, as %s reports", c.httpAddr)
	}
}
