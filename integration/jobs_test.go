package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// events counts the end events of every job, by id and status.
type events struct {
	mu   sync.Mutex
	byID map[string]map[wire.Status]int
	done map[string]bool
	all  chan struct{}
	want int
}

func watchEvents(t *testing.T, c *cluster, typ string, want int) *events {
	t.Helper()
	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	space, _ := subject.New("default")
	ev := &events{byID: map[string]map[wire.Status]int{}, done: map[string]bool{}, all: make(chan struct{}), want: want}
	sub, err := nc.Subscribe(space.JobEvent(typ, "*"), func(m *nats.Msg) {
		_, status, _ := space.ParseJobEvent(m.Subject)
		id := m.Header.Get(names.HeaderJobID)
		ev.mu.Lock()
		defer ev.mu.Unlock()
		if ev.byID[id] == nil {
			ev.byID[id] = map[wire.Status]int{}
		}
		ev.byID[id][wire.Status(status)]++
		if wire.Status(status).Final() && !ev.done[id] {
			ev.done[id] = true
			if len(ev.done) == ev.want {
				close(ev.all)
			}
		}
	})
	require.NoError(t, err)
	require.NoError(t, sub.SetPendingLimits(-1, -1))
	require.NoError(t, nc.Flush())
	return ev
}

// ended counts the jobs that reached a final status.
func (ev *events) ended() int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return len(ev.done)
}

// checkSquares checks that every job succeeded with the right result, and
// returns its final states.
func checkSquares(t *testing.T, c *cluster, ids []string) []*client.Job {
	t.Helper()
	ctx := context.Background()
	jobs := make([]*client.Job, len(ids))
	for n, id := range ids {
		j, err := c.goClient().Job(ctx, id)
		require.NoError(t, err, "job %d", n)
		require.Equal(t, client.StatusSucceeded, j.Status, "job %d: %+v", n, j)
		require.JSONEq(t, strconv.Itoa(n*n), string(j.Result), "job %d", n)
		jobs[n] = j
	}
	return jobs
}

func TestCluster_TenThousandJobsTwoHosts(t *testing.T) {
	c := newCluster(t)
	c.workerd("host-a", squares(2))
	c.workerd("host-b", squares(2))
	c.waitWorkers("squares", 4)

	const n = 10_000
	ev := watchEvents(t, c, "squares", n)
	ids := c.submitMany(context.Background(), "squares", n)
	select {
	case <-ev.all:
	case <-time.After(3 * time.Minute):
		t.Fatalf("only %d of %d jobs ended", ev.ended(), n)
	}
	checkSquares(t, c, ids)

	// Exactly once: no worker was lost, so every job ran and ended once.
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, id := range ids {
		require.Equal(t, map[wire.Status]int{wire.StatusSucceeded: 1}, ev.byID[id], "job %s", id)
	}
	hosts := c.waitJobsDone(n)
	require.Len(t, hosts, 2)
	require.Positive(t, hosts["host-a"])
	require.Positive(t, hosts["host-b"])
	require.Eventually(t, func() bool { return c.pool("squares").Succeeded == n }, 10*time.Second, 50*time.Millisecond)
}

func TestCluster_WorkersKilledLoseNoJob(t *testing.T) {
	c := newCluster(t)
	// Jobs of 2ms (slowsquares): a worker of squares-worker, whose jobs
	// take microseconds, is idle between two nearly all the time, and 47
	// kills once found none running a job.
	slow := fmt.Sprintf("name=squares,count=2,cmd=%s", filepath.Join(bin, "slowsquares"))
	c.workerd("host-a", slow)
	c.workerd("host-b", slow)
	c.waitWorkers("squares", 4)

	// Enough jobs for dozens of kills: 4 workers run about 2,000 jobs of
	// 2ms a second.
	const n = 20_000
	ev := watchEvents(t, c, "squares", n)

	// Kill a worker every 200ms, from the first submission until every job
	// has ended. The pid list is as of the last heartbeat, so some pids are
	// gone already (those kills fail and are not counted).
	kills := make(chan int, 1)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		k := 0
		defer func() { kills <- k }()
		for {
			select {
			case <-ev.all:
				return
			case <-time.After(3 * time.Minute):
				return
			case <-tick.C:
			}
			// A worker the last heartbeat saw holding jobs first: one
			// that is idle between two jobs dies with none, and proves
			// nothing (a run of 41 kills once found no job at all).
			var live, holding []int
			for _, w := range c.workers() {
				if w.PID > 0 {
					live = append(live, w.PID)
					if w.Job != "" || w.Queued > 0 {
						holding = append(holding, w.PID)
					}
				}
			}
			if len(holding) > 0 {
				live = holding
			}
			if len(live) > 0 && syscall.Kill(live[rand.N(len(live))], syscall.SIGKILL) == nil {
				k++
			}
		}
	}()
	ids := c.submitMany(context.Background(), "squares", n)
	var killed int
	select {
	case killed = <-kills:
	case <-time.After(4 * time.Minute):
	}
	if got := ev.ended(); got < n {
		t.Fatalf("only %d of %d jobs ended", got, n)
	}
	jobs := checkSquares(t, c, ids)

	// A killed worker's job is redelivered at once: measure the time from
	// the end of the killed attempt to the start of the next.
	var gaps []time.Duration
	retried := 0
	for _, j := range jobs {
		if j.Attempts < 2 {
			continue
		}
		retried++
		for i := 1; i < len(j.History); i++ {
			prev := j.History[i-1]
			if prev.EndedAt.IsZero() {
				continue // a lost attempt (its ending was never recorded)
			}
			gaps = append(gaps, j.History[i].StartedAt.Sub(prev.EndedAt))
		}
	}
	ev.mu.Lock()
	dups := 0
	for _, byStatus := range ev.byID {
		dups += byStatus[wire.StatusSucceeded] - 1
	}
	ev.mu.Unlock()
	slices.Sort(gaps)
	t.Logf("kills=%d retried=%d duplicate executions=%d", killed, retried, dups)
	require.Positive(t, killed, "no worker was killed: the test proved nothing")
	require.NotEmpty(t, gaps, "no job was redelivered")
	p50, p99 := gaps[len(gaps)/2], gaps[len(gaps)*99/100]
	t.Logf("redelivery after a kill: n=%d p50=%s p99=%s max=%s", len(gaps), p50, p99, gaps[len(gaps)-1])
	require.Less(t, p99, time.Second, "redelivery of a killed worker's job")
}

func TestHTTP_API(t *testing.T) {
	c := newCluster(t, withToken("s3cret"), withArgs("--max-payload", "1048576"))
	c.workerd("host-a", squares(1))
	c.waitWorkers("squares", 1)

	var j client.Job
	code := c.do(http.MethodPost, "/v1/jobs/squares?wait=10s", "12", nil, &j)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, "144", string(j.Result))
	require.Equal(t, 1, j.Attempts)

	var got client.Job
	require.Equal(t, http.StatusOK, c.do(http.MethodGet, "/v1/jobs/"+j.ID, "", nil, &got))
	require.Equal(t, j.ID, got.ID)
	require.Equal(t, "squares", got.Type)

	var idResp struct{ ID string }
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/jobs/squares", "3", nil, &idResp))
	require.NotEmpty(t, idResp.ID)

	// A payload the worker rejects ends dead with its error, not lost.
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/squares?wait=10s", `"x"`, nil, &j))
	require.Equal(t, client.StatusDead, j.Status)
	require.Contains(t, j.Error, "payload must be a number")
	require.JSONEq(t, `"x"`, string(j.Payload))

	// Idempotency: the same key is one job.
	var a, b struct{ ID string }
	key := map[string]string{"Idempotency-Key": "order-17"}
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/jobs/squares", "5", key, &a))
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/jobs/squares", "5", key, &b))
	require.Equal(t, a.ID, b.ID)

	// Bad input gets clear errors.
	var e struct{ Error string }
	require.Equal(t, http.StatusBadRequest, c.do(http.MethodPost, "/v1/jobs/squares", "{nope", nil, &e))
	require.Contains(t, e.Error, "not valid JSON")
	require.Equal(t, http.StatusBadRequest, c.do(http.MethodPost, "/v1/jobs/squares?wait=soon", "1", nil, &e))
	require.Contains(t, e.Error, "bad wait")
	require.Equal(t, http.StatusBadRequest, c.do(http.MethodPost, "/v1/jobs/bad.type", "1", nil, &e))
	big := `"` + strings.Repeat("a", 2<<20) + `"`
	require.Equal(t, http.StatusRequestEntityTooLarge, c.do(http.MethodPost, "/v1/jobs/squares", big, nil, &e))
	require.Contains(t, e.Error, "limit of 1048576 bytes")
	require.Equal(t, http.StatusNotFound, c.do(http.MethodGet, "/v1/jobs/nope", "", nil, &e))

	// A job type without a pool is accepted and waits, visible as queued.
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/jobs/later", `{"x":1}`, nil, &idResp))
	require.Eventually(t, func() bool { return c.pool("later").Queued == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, http.StatusOK, c.do(http.MethodGet, "/v1/jobs/"+idResp.ID, "", nil, &got))
	require.Equal(t, client.StatusQueued, got.Status)

	// Workers are visible with their host and pid, and count their jobs
	// (12, 3, "x" and 5) as of the host's last heartbeat.
	var ws []client.Worker
	require.Eventually(t, func() bool {
		ws = c.workers()
		return len(ws) == 1 && ws[0].Host == "host-a" && ws[0].PID > 0 && ws[0].JobsDone == 4
	}, 10*time.Second, 20*time.Millisecond)

	// Prometheus metrics, read at scrape time (the counters are saved and
	// counted from events, so wait for the dead one to show).
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, c.url("/metrics"), nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK &&
			strings.Contains(string(body), `conductor_jobs_ended_total{status="dead",type="squares"} 1`) &&
			strings.Contains(string(body), `conductor_jobs{status="queued",type="later"} 1`) &&
			strings.Contains(string(body), `conductor_worker_jobs_done_total{host="host-a",index="0",pool="squares"} 4`)
	}, 10*time.Second, 50*time.Millisecond)

	// Without the token: 401.
	c.token = ""
	require.Equal(t, http.StatusUnauthorized, c.do(http.MethodGet, "/metrics", "", nil, nil))
	require.Equal(t, http.StatusUnauthorized, c.do(http.MethodGet, "/v1/pools", "", nil, &e))
	require.Contains(t, e.Error, "token")
}

func TestSquaresBatch_Demo(t *testing.T) {
	p := start(t, "squares-batch")
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatal("squares-batch did not finish within a minute")
	}
	require.NoError(t, p.err, p.output())
	out := p.output()
	for i := range 10 {
		require.Regexp(t, `Worker [12], Job `+strconv.Itoa(i)+` => the square is `+strconv.Itoa(i*i)+`\n`, out)
	}
	require.Contains(t, out, "All jobs finished processing\n")
}

// The okanjo-conductor example runs alone: a batch with lookups, the
// workers' requests and their counters, in one program that forks its
// workers (docs/seed-mapping.md).
func TestExample_OkanjoConductor(t *testing.T) {
	p := start(t, "okanjo-conductor")
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatal("okanjo-conductor did not finish within a minute")
	}
	require.NoError(t, p.err, p.output())
	require.Contains(t, p.output(), "20 orders converted, 0 dead; the workers told 20 totals, 2149.00 EUR in all")
}

// The load-process-manager example runs alone: requests answered with
// their responses (one past its timeout, retried, then dead), the
// workers listed, the pool resized, a broadcast to every worker.
func TestExample_LoadProcessManager(t *testing.T) {
	p := start(t, "load-process-manager")
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("load-process-manager did not finish within two minutes")
	}
	require.NoError(t, p.err, p.output())
	out := p.output()
	for _, want := range []string{
		`request "hello": "olleh" after 1 attempt(s)`,
		`request "conductor": "rotcudnoc" after 1 attempt(s)`,
		`request "slow": dead after 2 attempt(s): job timed out after 200ms`,
		"2 workers", "resized to 3 workers", "broadcast to 3 workers",
	} {
		require.Contains(t, out, want)
	}
}

// The cluster-service example runs alone: two web workers on one shared
// socket, a killed one replaced, all restarted with no request refused.
func TestExample_ClusterService(t *testing.T) {
	p := start(t, "cluster-service")
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("cluster-service did not finish within two minutes")
	}
	require.NoError(t, p.err, p.output())
	out := p.output()
	require.Contains(t, out, "2 workers serve one socket")
	require.Contains(t, out, "a killed worker was replaced")
	require.Regexp(t, `all workers restarted; [1-9][0-9]* requests served meanwhile, 0 refused`, out)
}

// The okanjo-app-broker example runs alone: service workers kept alive,
// a killed one replaced, all recycled, drained and resumed.
func TestExample_OkanjoAppBroker(t *testing.T) {
	p := start(t, "okanjo-app-broker")
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("okanjo-app-broker did not finish within two minutes")
	}
	require.NoError(t, p.err, p.output())
	out := p.output()
	for _, want := range []string{"2 workers started", "worker_death: a killed worker was replaced",
		"worker_ended: both workers recycled", "drained: no worker runs", "resumed: the workers run again"} {
		require.Contains(t, out, want)
	}
}
