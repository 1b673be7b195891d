package conductor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// listBase is the updated_at of the first state the tests store; the
// others follow it by a millisecond and a few nanoseconds each, so that
// paging must keep nanoseconds.
var listBase = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// listState is a job state as workerd stores it: job "j<i>", updated at
// listBase plus i milliseconds and i nanoseconds.
func listState(i int, typ string, status client.Status) *client.Job {
	at := listBase.Add(time.Duration(i)*time.Millisecond + time.Duration(i))
	j := &client.Job{
		ID: "j" + strconv.Itoa(i), Type: typ, Status: status, Attempts: 1,
		CreatedAt: listBase, UpdatedAt: at,
		History: []client.Attempt{{Attempt: 1, Host: "h1", PID: 4121, StartedAt: listBase}},
	}
	switch status {
	case client.StatusSucceeded:
		j.Result = json.RawMessage(strconv.Itoa(i * i))
	case client.StatusFailed, client.StatusDead:
		j.Error = "boom " + strconv.Itoa(i)
		j.Payload = json.RawMessage(strconv.Itoa(i))
	}
	return j
}

// putStates stores jobs in bucket, one put each, in a shuffled order: the
// listing must not depend on the order of the writes.
func putStates(t *testing.T, js jetstream.JetStream, bucket string, jobs ...*client.Job) {
	t.Helper()
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, bucket)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(1, 2))
	for _, i := range r.Perm(len(jobs)) {
		data, err := json.Marshal(jobs[i])
		require.NoError(t, err)
		_, err = kv.Put(ctx, jobs[i].ID, data)
		require.NoError(t, err)
	}
}

// ids returns the ids of jobs, in order.
func ids(jobs []*client.Job) []string {
	out := []string{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

// listHTTP lists jobs by GET path on srv.
func listHTTP(t *testing.T, srv *httptest.Server, path string) []*client.Job {
	t.Helper()
	code, body := get(t, srv, path)
	require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
	var jobs []*client.Job
	require.NoError(t, json.Unmarshal([]byte(body), &jobs))
	return jobs
}

// TestClient_Jobs lists stored states by status, type, comma list, limit
// and before, through Client.Jobs and through GET /v1/jobs.
func TestClient_Jobs(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	space, err := subject.New("default")
	require.NoError(t, err)

	// j0..j5 are squares, j6..j11 cubes; each type has one job per status,
	// in the order of conductor's statuses (j4 and j10 are dead).
	statuses := []client.Status{
		client.StatusQueued, client.StatusRunning, client.StatusSucceeded,
		client.StatusFailed, client.StatusDead, client.StatusCancelled,
	}
	var states []*client.Job
	for i := range 12 {
		states = append(states, listState(i, []string{"squares", "cubes"}[i/6], statuses[i%6]))
	}
	putStates(t, bundle.js, space.StateBucket(), states...)
	// The dead index holds the dead jobs, and one whose state has expired.
	expired := listState(-1, "squares", client.StatusDead)
	putStates(t, bundle.js, space.DeadBucket(), states[4], states[10], expired)
	at := func(i int) time.Time { return states[i].UpdatedAt }

	for _, tc := range []struct {
		name  string
		q     client.JobQuery
		query string
		want  []string
	}{
		{"every job", client.JobQuery{}, "",
			[]string{"j11", "j10", "j9", "j8", "j7", "j6", "j5", "j4", "j3", "j2", "j1", "j0"}},
		{"queued", client.JobQuery{Status: []client.Status{"queued"}}, "status=queued", []string{"j6", "j0"}},
		{"running", client.JobQuery{Status: []client.Status{"running"}}, "status=running", []string{"j7", "j1"}},
		{"succeeded", client.JobQuery{Status: []client.Status{"succeeded"}}, "status=succeeded", []string{"j8", "j2"}},
		{"failed", client.JobQuery{Status: []client.Status{"failed"}}, "status=failed", []string{"j9", "j3"}},
		{"cancelled", client.JobQuery{Status: []client.Status{"cancelled"}}, "status=cancelled", []string{"j11", "j5"}},
		{"dead: the dead index, expired states too", client.JobQuery{Status: []client.Status{"dead"}}, "status=dead",
			[]string{"j10", "j4", "j-1"}},
		{"dead and failed: the states", client.JobQuery{Status: []client.Status{"dead", "failed"}}, "status=dead,failed",
			[]string{"j10", "j9", "j4", "j3"}},
		{"dead, repeated", client.JobQuery{Status: []client.Status{"dead", "dead"}}, "status=dead&status=dead",
			[]string{"j10", "j4", "j-1"}},
		{"type", client.JobQuery{Type: "squares"}, "type=squares", []string{"j5", "j4", "j3", "j2", "j1", "j0"}},
		{"type and statuses", client.JobQuery{Type: "cubes", Status: []client.Status{"queued", "running", "dead"}},
			"type=cubes&status=queued,running,dead", []string{"j10", "j7", "j6"}},
		{"dead of a type", client.JobQuery{Type: "squares", Status: []client.Status{"dead"}}, "type=squares&status=dead",
			[]string{"j4", "j-1"}},
		{"an unknown type", client.JobQuery{Type: "other"}, "type=other", []string{}},
		{"limit", client.JobQuery{Limit: 3}, "limit=3", []string{"j11", "j10", "j9"}},
		{"limit of a status", client.JobQuery{Status: []client.Status{"failed"}, Limit: 1}, "status=failed&limit=1", []string{"j9"}},
		{"before", client.JobQuery{Before: at(5)}, "before=" + url.QueryEscape(at(5).Format(time.RFC3339Nano)),
			[]string{"j4", "j3", "j2", "j1", "j0"}},
		{"before, a nanosecond later", client.JobQuery{Before: at(5).Add(1)},
			"before=" + url.QueryEscape(at(5).Add(1).Format(time.RFC3339Nano)), []string{"j5", "j4", "j3", "j2", "j1", "j0"}},
		{"before in another zone", client.JobQuery{Before: at(2), Status: []client.Status{"running"}},
			"status=running&before=" + url.QueryEscape(at(2).In(time.FixedZone("", 3600)).Format(time.RFC3339Nano)), []string{"j1"}},
		{"before the dead index", client.JobQuery{Before: at(4), Status: []client.Status{"dead"}},
			"status=dead&before=" + url.QueryEscape(at(4).Format(time.RFC3339Nano)), []string{"j-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Client().Jobs(context.Background(), tc.q)
			require.NoError(t, err)
			require.Equal(t, tc.want, ids(got))
			require.Equal(t, tc.want, ids(listHTTP(t, srv, "/v1/jobs?"+tc.query)), tc.query)
		})
	}

	got, err := c.Client().Jobs(context.Background(), client.JobQuery{Status: []client.Status{"succeeded"}, Type: "squares"})
	require.NoError(t, err)
	require.Len(t, got, 1)
	want := *states[2]
	want.CreatedAt, want.UpdatedAt = got[0].CreatedAt, got[0].UpdatedAt // their locations may differ
	require.Equal(t, &want, got[0], "the whole state")
	require.True(t, states[2].UpdatedAt.Equal(got[0].UpdatedAt))
	dead, err := c.Client().DeadJobs(context.Background(), "cubes", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"j10"}, ids(dead))
	require.JSONEq(t, "10", string(dead[0].Payload))
}

// TestClient_JobsBadQuery: a query that cannot be answered is an
// ErrBadQuery from Client.Jobs, and a 400 that says why from the API.
func TestClient_JobsBadQuery(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{})
	srv := serve(t, c)

	for _, tc := range []struct {
		query, want string
	}{
		{"status=nope", `unknown status "nope": want queued, held, running, succeeded, failed, dead, cancelled`},
		{"status=Running", `unknown status "Running"`},
		{"status=running,", `unknown status ""`},
		{"status=dead&status=gone", `unknown status "gone"`},
		{"type=a.b", `job type "a.b"`},
		{"limit=0", `bad limit "0": want 1 to 1000`},
		{"limit=1001", `bad limit "1001": want 1 to 1000`},
		{"limit=ten", `bad limit "ten"`},
		{"status=dead&limit=-1", `bad limit "-1"`},
		{"before=yesterday", `bad before "yesterday": want an RFC 3339 time`},
		{"before=2026-11-23", `bad before "2026-11-23"`},
	} {
		code, body := get(t, srv, "/v1/jobs?"+tc.query)
		require.Equal(t, http.StatusBadRequest, code, tc.query)
		var answer struct{ Error string }
		require.NoError(t, json.Unmarshal([]byte(body), &answer))
		require.Contains(t, answer.Error, tc.want, tc.query)
	}

	for _, q := range []client.JobQuery{
		{Status: []client.Status{"nope"}},
		{Type: "a b"},
		{Limit: -1},
		{Limit: client.MaxListLimit + 1},
	} {
		_, err := c.Client().Jobs(context.Background(), q)
		require.ErrorIs(t, err, client.ErrBadQuery, "%+v", q)
	}
	_, err := c.Client().Jobs(context.Background(), client.JobQuery{Type: "a.b"})
	require.ErrorIs(t, err, subject.ErrBadToken)
	_, err = c.Client().DeadJobs(context.Background(), "", -1)
	require.ErrorIs(t, err, client.ErrBadQuery)
}

// TestClient_JobsRawStates: a state is selected by what it decodes to,
// however its JSON is written; a value that is not a job state is skipped.
func TestClient_JobsRawStates(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	space, err := subject.New("default")
	require.NoError(t, err)
	kv, err := bundle.js.KeyValue(context.Background(), space.StateBucket())
	require.NoError(t, err)
	for id, state := range map[string]string{
		"escaped":  `{"id":"escaped","type":"squ\u0061res","status":"\u0072unning","updated_at":"2026-11-23T10:00:01Z"}`,
		"spaced":   `{ "id" : "spaced", "type" : "squares", "status" : "running", "updated_at" : "2026-11-23T10:00:02Z" }`,
		"mentions": `{"id":"mentions","type":"squares","status":"succeeded","error":"\"running\"","updated_at":"2026-11-23T10:00:03Z"}`,
		"other":    `{"id":"other","type":"\"squares\"","status":"running","updated_at":"2026-11-23T10:00:04Z"}`,
		"garbage":  `running squares`,
		"array":    `["running","squares"]`,
	} {
		_, err := kv.Put(context.Background(), id, []byte(state))
		require.NoError(t, err)
	}
	got, err := c.Client().Jobs(context.Background(), client.JobQuery{Status: []client.Status{"running"}, Type: "squares"})
	require.NoError(t, err)
	require.Equal(t, []string{"spaced", "escaped"}, ids(got))
	require.Equal(t, "squares", got[1].Type)
	got, err = c.Client().Jobs(context.Background(), client.JobQuery{})
	require.NoError(t, err)
	require.Equal(t, []string{"other", "mentions", "spaced", "escaped"}, ids(got))
}

// TestClient_JobsPages walks every page of a listing by before: every job
// comes once, newest first, with no gap; rewritten states count by their
// last value.
func TestClient_JobsPages(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	space, err := subject.New("default")
	require.NoError(t, err)

	statuses := []client.Status{client.StatusRunning, client.StatusSucceeded, client.StatusFailed}
	var states []*client.Job
	for i := range 250 {
		states = append(states, listState(i, "squares", statuses[i%3]))
	}
	putStates(t, bundle.js, space.StateBucket(), states...)
	// Twenty jobs end later: their new state replaces the first.
	var ended []*client.Job
	for i := 0; i < 250; i += 12 {
		j := listState(300+i, "squares", client.StatusSucceeded)
		j.ID = states[i].ID
		states[i] = j
		ended = append(ended, j)
	}
	putStates(t, bundle.js, space.StateBucket(), ended...)
	slices.SortFunc(states, func(a, b *client.Job) int { return b.UpdatedAt.Compare(a.UpdatedAt) })

	walk := func(query string) []string {
		var all []string
		path := "/v1/jobs?limit=7" + query
		for pages := 0; ; pages++ {
			require.Less(t, pages, 100, "the pages do not end")
			page := listHTTP(t, srv, path)
			if len(page) == 0 {
				return all
			}
			require.LessOrEqual(t, len(page), 7)
			all = append(all, ids(page)...)
			last := page[len(page)-1].UpdatedAt.Format(time.RFC3339Nano)
			path = "/v1/jobs?limit=7" + query + "&before=" + url.QueryEscape(last)
		}
	}
	require.Equal(t, ids(states), walk(""), "every job once, newest first")
	var failed []*client.Job
	for _, j := range states {
		if j.Status == client.StatusFailed || j.Status == client.StatusRunning {
			failed = append(failed, j)
		}
	}
	require.Greater(t, len(failed), 3*7, "several pages")
	require.Equal(t, ids(failed), walk("&status=running,failed"))
}

// TestClient_JobsWhileWritten lists states while they are rewritten: a
// state rewritten during the pass comes once, with one of its values.
func TestClient_JobsWhileWritten(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	space, err := subject.New("default")
	require.NoError(t, err)
	var states []*client.Job
	for i := range 500 {
		states = append(states, listState(i, "squares", client.StatusRunning))
	}
	putStates(t, bundle.js, space.StateBucket(), states...)
	kv, err := bundle.js.KeyValue(context.Background(), space.StateBucket())
	require.NoError(t, err)

	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-quit:
				return
			default:
			}
			j := listState(1000+n, "squares", client.StatusSucceeded)
			j.ID = states[n%len(states)].ID
			data, _ := json.Marshal(j)
			if _, err := kv.Put(context.Background(), j.ID, data); err != nil {
				t.Error(err)
				return
			}
		}
	})
	defer wg.Wait()
	defer close(quit)
	for range 20 {
		got, err := c.Client().Jobs(context.Background(), client.JobQuery{Limit: client.MaxListLimit})
		require.NoError(t, err)
		require.ElementsMatch(t, ids(states), ids(got), "each job once")
		require.True(t, slices.IsSortedFunc(got, func(a, b *client.Job) int { return b.UpdatedAt.Compare(a.UpdatedAt) }))
	}
}

// TestConductor_JobsOfARealRun lists jobs that a real workerd agent ran,
// and one that waits for a worker.
func TestConductor_JobsOfARealRun(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	startAgent(t, bundle, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()

	done, err := cl.SubmitAndWait(ctx, "squares", 3)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, done.Status)
	dead, err := cl.SubmitAndWait(ctx, "squares", "fail")
	require.NoError(t, err)
	require.Equal(t, client.StatusDead, dead.Status)
	queued, err := cl.Submit(ctx, "later", 1)
	require.NoError(t, err)

	// A job's end is announced once its state is stored: no wait needed.
	got := listHTTP(t, srv, "/v1/jobs?status=succeeded&type=squares")
	require.Equal(t, []string{done.ID}, ids(got))
	require.JSONEq(t, "9", string(got[0].Result))
	require.Equal(t, 1, got[0].Attempts)
	require.Len(t, got[0].History, 1)
	require.Equal(t, "h1", got[0].History[0].Host)
	require.Equal(t, []string{queued, dead.ID, done.ID}, ids(listHTTP(t, srv, "/v1/jobs")))
	require.Equal(t, []string{queued, dead.ID}, ids(listHTTP(t, srv, "/v1/jobs?status=queued,dead")))
	require.Equal(t, []string{dead.ID}, ids(listHTTP(t, srv, "/v1/jobs?status=dead")))
	require.Empty(t, listHTTP(t, srv, "/v1/jobs?status=running"))
}

// BenchmarkJobs_List lists the 100 newest running jobs among 100,000
// stored states (50 of them running), in file storage as conductord
// keeps them by default. states/s is how many states a listing scans per
// second.
func BenchmarkJobs_List(b *testing.B) {
	const total, running = 100_000, 50
	c, err := conductor.New(conductor.Config{DataDir: b.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(b, err)
	require.NoError(b, c.Start(context.Background()))
	b.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(b, err)
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	space, err := subject.New("default")
	require.NoError(b, err)

	ctx := context.Background()
	var size int
	for i := range total {
		status := client.StatusSucceeded
		if i%(total/running) == 0 {
			status = client.StatusRunning
		}
		j := listState(i, []string{"squares", "cubes"}[i%2], status)
		j.ID = fmt.Sprintf("0193a1d2-8c4e-7b7c-9d7e-%012d", i)
		data, err := json.Marshal(j)
		require.NoError(b, err)
		size += len(data)
		if _, err := js.PublishAsync(subject.KV(space.StateBucket(), j.ID), data); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("states not stored within a minute")
	}
	b.Logf("%d states, %d bytes each on average", total, size/total)

	for _, bc := range []struct {
		name string
		q    client.JobQuery
		want int
	}{
		{"status=running", client.JobQuery{Status: []client.Status{client.StatusRunning}}, running},
		{"any", client.JobQuery{}, client.DefaultListLimit},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				jobs, err := c.Client().Jobs(ctx, bc.q)
				if err != nil || len(jobs) != bc.want {
					b.Fatalf("%d jobs, %v", len(jobs), err)
				}
			}
			b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "states/s")
		})
	}
}
