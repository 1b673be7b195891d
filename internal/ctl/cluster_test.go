package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/worker"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// TestMain plays the workers of the cluster tests' pools when run as one
// (worker.IsWorker), and fails the tests that leak goroutines otherwise.
func TestMain(m *testing.M) {
	if worker.IsWorker() {
		worker.Main(testHandler)
		return
	}
	goleak.VerifyTestMain(m)
}

// testHandler squares numbers (and counts them); "fail" fails for good,
// so that the job is dead at once; "say:LINE" writes LINE on stdout and
// "err: LINE" on stderr (the lines conductorctl logs reads).
func testHandler(_ context.Context, job *worker.Job) (any, error) {
	var s string
	if json.Unmarshal(job.Payload, &s) == nil {
		switch {
		case s == "fail":
			return nil, worker.Permanent(errors.New("boom: told to fail"))
		case strings.HasPrefix(s, "say:"):
			fmt.Fprintln(os.Stdout, strings.TrimPrefix(s, "say:"))
			fmt.Fprintln(os.Stderr, "err: "+strings.TrimPrefix(s, "say:"))
			return 0, nil
		}
	}
	var n int
	if err := job.Decode(&n); err != nil {
		return nil, worker.Permanent(err)
	}
	job.Count("squared", 1)
	return n * n, nil
}

// clusterBundle is a real cluster in this process: a conductor (token
// "tok") with its HTTP API, and workerd host h1 running pool squares with
// two workers (this test binary).
type clusterBundle struct {
	srv *httptest.Server
	c   *conductor.Conductor
}

func setupCluster(t *testing.T) *clusterBundle {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := conductor.New(conductor.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Token: "tok", MemoryStorage: true,
		StatsInterval: 100 * time.Millisecond, Logger: log.With("who", "conductor"),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)

	self, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan error, 1)
	go func() {
		returned <- workerd.Run(ctx, workerd.Config{
			NATSURL: c.NATSURL(), Token: "tok", HostID: "h1", Logger: log.With("who", "workerd"),
			Pools: []broker.Spec{{Name: "squares", Count: 2, Cmd: []string{self}}},
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-returned:
			require.NoError(t, err)
		case <-time.After(time.Minute):
			t.Error("workerd.Run did not return within a minute of the cleanup")
		}
	})
	b := &clusterBundle{srv: srv, c: c}
	// Real processes start: wait for both workers to be ready.
	require.Eventually(t, func() bool {
		var ws []map[string]any
		out, err := b.run("-o", "json", "workers")
		if err != nil || json.Unmarshal([]byte(out), &ws) != nil || len(ws) != 2 {
			return false
		}
		for _, w := range ws {
			if w["state"] != "ready" {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "two ready workers of squares on h1")
	return b
}

// run runs conductorctl against b's conductor and returns its stdout.
func (b *clusterBundle) run(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), append([]string{"--server", b.srv.URL, "--token", "tok"}, args...), &out, &errOut)
	return out.String(), err
}

// json runs conductorctl -o json and decodes what it prints into v.
func (b *clusterBundle) json(t *testing.T, v any, args ...string) string {
	t.Helper()
	out, err := b.run(append([]string{"-o", "json"}, args...)...)
	require.NoError(t, err, "%v", args)
	require.NoError(t, json.Unmarshal([]byte(out), v), "%v: %s", args, out)
	require.True(t, strings.HasPrefix(out, "[\n  {") || strings.HasPrefix(out, "{\n  \"") || out == "[]\n", "indented JSON: %s", out)
	return out
}

// TestCluster_ReadCommands runs every read command against a real cluster,
// in table, wide and JSON form.
func TestCluster_ReadCommands(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)

	out, err := b.run("submit", "--wait=30s", "squares", "7")
	require.NoError(t, err)
	var job struct{ ID, Status string }
	require.NoError(t, json.Unmarshal([]byte(out), &job))
	require.Equal(t, "succeeded", job.Status)
	out, err = b.run("submit", "--wait=30s", "squares", `"fail"`)
	var exit *ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, ExitNotEnded, exit.Code)
	require.Contains(t, exit.Msg, "is dead")
	var deadJob struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(out), &deadJob))
	// conductord counts the ends as they come from the ends stream.
	require.Eventually(t, func() bool {
		var pools []struct{ Succeeded, Dead int }
		out, err := b.run("-o", "json", "pools")
		return err == nil && json.Unmarshal([]byte(out), &pools) == nil && len(pools) == 1 &&
			pools[0].Succeeded == 1 && pools[0].Dead == 1
	}, 10*time.Second, 20*time.Millisecond, "the ends counted")

	t.Run("job", func(t *testing.T) {
		out, err := b.run("job", job.ID)
		require.NoError(t, err)
		require.Contains(t, out, `"status": "succeeded"`, "JSON unless -o table, as before")
		out, err = b.run("-o", "table", "job", job.ID)
		require.NoError(t, err)
		require.Contains(t, out, "id:          "+job.ID)
		require.Contains(t, out, "status:      succeeded")
		require.Contains(t, out, "result:      49")
		require.Regexp(t, `updated_at:  \S+ \(\d+(ms|s) ago\)`, out)
		require.Regexp(t, `ATTEMPT\s+HOST\s+PID\s+STARTED\s+TOOK\s+ERROR\n1\s+h1\s+\d+\s+`, out)
		var j map[string]any
		b.json(t, &j, "job", job.ID)
		require.Equal(t, "succeeded", j["status"])
		require.Equal(t, float64(49), j["result"])
	})
	t.Run("jobs", func(t *testing.T) {
		out, err := b.run("jobs", "--type", "squares")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^ID\s+TYPE\s+STATUS\s+ATTEMPTS\s+UPDATED_AT\s+ERROR$`, out)
		require.Regexp(t, `(?m)^`+deadJob.ID+`\s+squares\s+dead\s+1\s+\S+\s+boom: told to fail$`, out)
		out, err = b.run("jobs", "-o", "wide", "--status", "succeeded")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^ID\s+TYPE\s+STATUS\s+ATTEMPTS\s+UPDATED_AT\s+ERROR\s+PRIORITY\s+BATCH\s+AGE\s+CREATED$`, out)
		require.Regexp(t, `(?m)^`+job.ID+`\s+squares\s+succeeded\s+1\s+\S+\s+-\s+-\s+-\s+\d+(ms|s) ago\s+\d+(ms|s) ago$`, out)
		var jobs []struct{ ID, Status string }
		b.json(t, &jobs, "jobs", "--type", "squares")
		require.Len(t, jobs, 2)
	})
	t.Run("dead", func(t *testing.T) {
		out, err := b.run("dead", "squares")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^`+deadJob.ID+`\s+squares\s+1\s+\S+\s+boom: told to fail$`, out)
		var dead []struct{ ID, Error string }
		b.json(t, &dead, "dead")
		require.Len(t, dead, 1)
		require.Equal(t, deadJob.ID, dead[0].ID)
	})
	t.Run("pools", func(t *testing.T) {
		out, err := b.run("pools")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^squares\s+0\s+0\s+0\s+1\s+0\s+1\s+2\s+running\s+-$`, out)
		out, err = b.run("pools", "-o", "wide")
		require.NoError(t, err)
		require.Regexp(t, `(?m)SUPERSEDED\s+HOSTS$`, out)
		require.Contains(t, out, "h1:running(2)")
		var pools []struct {
			Type                     string
			Succeeded, Dead, Workers int
		}
		b.json(t, &pools, "pools")
		require.Len(t, pools, 1)
		require.Equal(t, "squares", pools[0].Type)
		require.Equal(t, 1, pools[0].Succeeded)
		require.Equal(t, 1, pools[0].Dead)
		require.Equal(t, 2, pools[0].Workers)
	})
	t.Run("workers", func(t *testing.T) {
		out, err := b.run("workers")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^h1\s+squares\s+0\s+\d+\s+ready\s+\d+\.\d (KiB|MiB)\s+\d\s+0\s+-\s+-$`, out)
		out, err = b.run("workers", "-o", "wide")
		require.NoError(t, err)
		require.Regexp(t, `(?m)STARTED\s+CPU\s+VERSION\s+QUEUED\s+LAST_EXIT\s+LAST_EXIT_AT$`, out)
		// CPU: "-" in a heartbeat sent before the worker had used any.
		require.Regexp(t, `\d+(ms|s) ago\s+(\d+(ms|s)|-)\s+1\s+-\s+-\s+-`, out)
		var ws []struct {
			Pool string
			RSS  int64
		}
		b.json(t, &ws, "workers")
		require.Len(t, ws, 2)
		require.Greater(t, ws[0].RSS, int64(1024), "raw bytes in JSON")
	})
	t.Run("hosts", func(t *testing.T) {
		out, err := b.run("hosts")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^HOST\s+PID\s+UP\s+POOLS\s+WORKERS\s+LEAVING\s+LOST$`, out)
		require.Regexp(t, `(?m)^h1\s+\d+\s+\d+(ms|s)\s+squares\(2\)\s+2\s+-\s+-$`, out)
		out, err = b.run("hosts", "-o", "wide")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^h1\s+.*\s+1s\s+squares:running$`, out)
		var hosts []struct {
			Host  string
			PID   int
			Pools []struct{ Name, State string }
		}
		b.json(t, &hosts, "hosts")
		require.Len(t, hosts, 1)
		require.Equal(t, os.Getpid(), hosts[0].PID, "workerd runs in this process")
		require.Equal(t, "squares", hosts[0].Pools[0].Name)
	})
	t.Run("stats", func(t *testing.T) {
		var out string
		require.Eventually(t, func() bool {
			out, err = b.run("stats")
			return err == nil && strings.Contains(out, "squared")
		}, 10*time.Second, 20*time.Millisecond, "a roll-up with the counter")
		require.Regexp(t, `(?m)^COUNTER\s+LAST\s+DIFF$`, out)
		require.Regexp(t, `(?m)^squared\s+1\s+`, out)
		out, err = b.run("stats", "-o", "wide")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^h1\s+squares\s+\d\s+squared\s+1\s+`, out)
		var s struct {
			Agg struct{ Last map[string]float64 }
		}
		b.json(t, &s, "stats")
		require.Equal(t, float64(1), s.Agg.Last["squared"])
	})
	t.Run("health", func(t *testing.T) {
		out, err := b.run("health")
		require.NoError(t, err)
		require.Contains(t, out, "status  ok")
		var h struct{ Status string }
		b.json(t, &h, "health")
		require.Equal(t, "ok", h.Status)
	})
	t.Run("version", func(t *testing.T) {
		out, err := b.run("version")
		require.NoError(t, err)
		require.Regexp(t, `(?m)^conductorctl\s+devel .*go1`, out)
		require.Regexp(t, `(?m)^conductord\s+devel .*go1.*\(`+b.srv.URL+`\)$`, out)
		var v struct{ Conductorctl, Conductord struct{ Version, Go string } }
		b.json(t, &v, "version")
		require.Equal(t, "devel", v.Conductord.Version)
		require.NotEmpty(t, v.Conductorctl.Go)
	})
	t.Run("lookup", func(t *testing.T) {
		_, err := b.run("lookup", "set", "prices", "sku-1", `{"eur":2}`)
		require.NoError(t, err)
		out, err := b.run("lookup", "get", "prices", "sku-1")
		require.NoError(t, err)
		require.Equal(t, "{\n  \"eur\": 2\n}\n", out)
		out, err = b.run("lookup", "ls", "prices")
		require.NoError(t, err)
		require.Equal(t, "sku-1\n", out)
		var keys struct{ Keys []string }
		b.json(t, &keys, "lookup", "ls", "prices")
		require.Equal(t, []string{"sku-1"}, keys.Keys)
	})
	t.Run("top", func(t *testing.T) {
		out, err := b.run("top", "--once", "--interval", "50ms")
		require.NoError(t, err)
		require.NotContains(t, out, "\x1b[", "no ANSI when stdout is not a terminal")
		require.Contains(t, out, "hosts: 1 live, 0 leaving")
		require.Regexp(t, `(?m)^TYPE\s+STATE\s+QUEUED\s+RUNNING\s+WORKERS\s+OK/S\s+FAILED/S\s+DEAD$`, out)
		require.Regexp(t, `(?m)^squares\s+running\s+0\s+0\s+2\s+0\.0\s+0\.0\s+1$`, out)
		require.Regexp(t, `(?m)^`+deadJob.ID+`\s+squares\s+1\s+\S+ ago\s+boom: told to fail$`, out)
	})
}

// TestCluster_WriteCommands: pool commands and their exit codes, retry and
// cancel, against the real cluster.
func TestCluster_WriteCommands(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)

	// The pool's events as JSON, one object a line, while it is resized.
	ctx, cancel := context.WithCancel(context.Background())
	events, errOut := make(chanWriter, 100), make(chanWriter, 100)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--server", b.srv.URL, "--token", "tok", "-o", "json", "events", "--pool", "squares"}, events, errOut)
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Contains(t, errOut.next(t), "following the events of pool squares")

	out, err := b.run("resize", "squares", "3")
	require.NoError(t, err)
	require.Equal(t, "HOST  RESULT\nh1    accepted\n", out)
	for {
		var e struct{ Scope, Kind, Host, Pool string }
		require.NoError(t, json.Unmarshal([]byte(events.next(t)), &e))
		require.Equal(t, "squares", e.Pool)
		if e.Scope == "pool" && e.Kind == "resized" {
			require.Equal(t, "h1", e.Host)
			break
		}
	}
	require.Eventually(t, func() bool {
		var ws []any
		out, err := b.run("-o", "json", "workers")
		return err == nil && json.Unmarshal([]byte(out), &ws) == nil && len(ws) == 3
	}, 30*time.Second, 20*time.Millisecond, "three workers after resize")

	var ans struct {
		Op    string
		Hosts []struct{ Host string }
	}
	b.json(t, &ans, "recycle", "squares")
	require.Equal(t, "recycle", ans.Op)
	require.Equal(t, "h1", ans.Hosts[0].Host)

	_, err = b.run("drain", "ghost")
	require.ErrorContains(t, err, `no live host runs pool "ghost" (404 Not Found)`)

	out, err = b.run("submit", "--wait=30s", "squares", `"fail"`)
	require.Error(t, err)
	var dead struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(out), &dead))
	out, err = b.run("retry", dead.ID)
	require.NoError(t, err)
	require.Contains(t, out, `"status": "queued"`)
	_, err = b.run("cancel", "nope")
	require.ErrorContains(t, err, "404")

	// A wrong token, against the real API.
	_, err = b.run("--token", "wrong", "pools")
	require.ErrorContains(t, err, "(401 Unauthorized): conductord refused the token of --token; "+
		"give conductord's token with --token-file FILE, CONDUCTOR_TOKEN or --token")
}
