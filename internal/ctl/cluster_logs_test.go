package ctl

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// sayJob submits a job whose worker writes line on its stdout and
// "err: "+line on its stderr (testHandler, "say:"), and waits for its end.
func (b *clusterBundle) sayJob(t *testing.T, line string) {
	t.Helper()
	payload, err := json.Marshal("say:" + line)
	require.NoError(t, err)
	out, err := b.run("submit", "--wait=30s", "squares", string(payload))
	require.NoError(t, err, out)
	require.Contains(t, out, `"status": "succeeded"`)
}

// logLines runs conductorctl logs with args and returns the lines of
// its output that carry marker.
func (b *clusterBundle) logLines(t *testing.T, marker string, args ...string) []string {
	t.Helper()
	out, err := b.run(append([]string{"logs", "squares"}, args...)...)
	require.NoError(t, err, "%v", args)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, marker) {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestCluster_Logs: conductorctl logs against a real cluster whose workers
// (this test binary) print lines: the table, -o json, --host, --tail, and
// -f receiving a new line, then ending when its context does.
func TestCluster_Logs(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)

	b.sayJob(t, "hello-1")
	b.sayJob(t, "hello-2")
	b.sayJob(t, "hello-3")
	// workerd reads its workers' output as they write it: wait for the last.
	require.Eventually(t, func() bool {
		return len(b.logLines(t, "err: hello-3")) == 1
	}, 30*time.Second, 20*time.Millisecond, "the workers' lines in the host's buffer")

	t.Run("table", func(t *testing.T) {
		lines := b.logLines(t, "hello-")
		require.Len(t, lines, 6, "each line on stdout and on stderr: %q", lines)
		line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z h1/squares\[[01]\] (stdout|stderr): (err: )?hello-\d$`)
		for _, l := range lines {
			require.Regexp(t, line, l)
		}
		require.Contains(t, strings.Join(lines, "\n"), "stdout: hello-1")
		require.Contains(t, strings.Join(lines, "\n"), "stderr: err: hello-2")
		require.Regexp(t, `stdout: hello-3$`, b.logLines(t, "stdout: hello-3")[0])
	})
	t.Run("json", func(t *testing.T) {
		out, err := b.run("-o", "json", "logs", "squares")
		require.NoError(t, err)
		var n int
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			var r struct {
				Time         time.Time
				Host, Pool   string
				Index, PID   int
				Stream, Line string
			}
			require.NoError(t, json.Unmarshal([]byte(l), &r), "one JSON object a line: %q", l)
			if !strings.Contains(r.Line, "hello-") {
				continue
			}
			n++
			require.Equal(t, "h1", r.Host)
			require.Equal(t, "squares", r.Pool)
			require.Positive(t, r.PID)
			require.Contains(t, []string{"stdout", "stderr"}, r.Stream)
			require.Equal(t, r.Stream == "stderr", strings.HasPrefix(r.Line, "err: "), "%+v", r)
			require.WithinDuration(t, time.Now(), r.Time, time.Minute)
		}
		require.Equal(t, 6, n)
	})
	t.Run("host", func(t *testing.T) {
		require.Len(t, b.logLines(t, "hello-", "--host", "h1"), 6)
		_, err := b.run("logs", "squares", "--host", "h2")
		require.ErrorContains(t, err, "host h2 is not live or does not run pool squares (404 Not Found)")
		_, err = b.run("logs", "ghost")
		require.ErrorContains(t, err, "no live host runs pool ghost (404 Not Found)")
	})
	t.Run("tail", func(t *testing.T) {
		lines := b.logLines(t, "hello-", "--tail", "2")
		require.Len(t, lines, 2, "%q", lines)
		require.Contains(t, strings.Join(lines, "\n"), "hello-3")
		require.NotContains(t, strings.Join(lines, "\n"), "hello-1")
		require.Empty(t, b.logLines(t, "hello-", "--tail", "0"))
	})
	t.Run("follow", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out, errOut := make(chanWriter, 100), make(chanWriter, 100)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, []string{"--server", b.srv.URL, "--token", "tok", "logs", "squares", "-f", "--tail", "1"}, out, errOut)
		}()
		// The tail comes after conductord subscribed to the new lines.
		require.Contains(t, out.next(t), "hello-3")
		b.sayJob(t, "after-follow")
		for got := ""; !strings.Contains(got, "stdout: after-follow"); {
			got = out.next(t)
			require.Regexp(t, `h1/squares\[[01]\] std(out|err): (err: )?after-follow\n$`, got)
		}
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, "-f ends without an error when interrupted")
		case <-time.After(30 * time.Second):
			t.Fatal("logs -f did not return after its context ended")
		}
		require.Empty(t, errOut)
	})
}

// TestCluster_LogsFollowHostLeft: logs -f --host H is told when host H
// leaves the cluster (a record on stderr), and its stream ends then, an
// error with -f; an operator watching a host's workers is not left with a
// silent stream.
func TestCluster_LogsFollowHostLeft(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)

	// A second host, h2, the only one with pool talk.
	self, err := os.Executable()
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	wctx, stopH2 := context.WithCancel(context.Background())
	defer stopH2()
	returned := make(chan error, 1)
	go func() {
		returned <- workerd.Run(wctx, workerd.Config{
			NATSURL: b.c.NATSURL(), Token: "tok", HostID: "h2", Logger: log.With("who", "workerd-h2"),
			Pools: []broker.Spec{{Name: "talk", Count: 1, Cmd: []string{self}}},
		})
	}()
	out, err := b.run("submit", "--wait=30s", "talk", `"say:from-h2"`)
	require.NoError(t, err, out)
	require.Eventually(t, func() bool {
		out, err := b.run("logs", "talk", "--host", "h2")
		return err == nil && strings.Contains(out, "stdout: from-h2")
	}, 30*time.Second, 20*time.Millisecond, "h2's line in its buffer")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines, errOut := make(chanWriter, 100), make(chanWriter, 100)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--server", b.srv.URL, "--token", "tok", "logs", "talk", "-f", "--host", "h2", "--tail", "1"}, lines, errOut)
	}()
	require.Contains(t, lines.next(t), "from-h2")

	stopH2()
	require.NoError(t, <-returned)
	require.Eventually(t, func() bool {
		var hosts []struct{ Host string }
		out, err := b.run("-o", "json", "hosts")
		return err == nil && json.Unmarshal([]byte(out), &hosts) == nil && len(hosts) == 1 && hosts[0].Host == "h1"
	}, 30*time.Second, 20*time.Millisecond, "h2 gone from the live hosts")
	select {
	case err := <-done:
		require.ErrorContains(t, err, "ended", "conductord ended the stream of a host gone")
	case <-time.After(30 * time.Second):
		t.Fatal("logs -f --host h2 still open 30s after h2 left")
	}
	require.Contains(t, errOut.next(t), "host h2 left")
}
