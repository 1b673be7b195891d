package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/conductor"
)

// jsonlFile writes n lines, the numbers 0 to n-1, to a file and returns
// its path.
func jsonlFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintln(&b, i)
	}
	path := filepath.Join(t.TempDir(), "jobs.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// TestReview17b_SubmitFileInterruptKeepsInFlightBatch: Ctrl-C while a
// chunk of submit -f is in flight. conductord may already have queued it;
// conductorctl used to cancel the request, lose its answer, and report
// that chunk as failed, so its batch id was never printed: the operator
// could not abort jobs that were queued. Now the chunk in flight gets its
// answer (its id printed), and nothing after it is sent.
func TestReview17b_SubmitFileInterruptKeepsInFlightBatch(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)

	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	var mu sync.Mutex
	var queued []string // the batch ids conductord answered
	posts := 0
	h := b.c.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/v1/batches/") {
			h.ServeHTTP(w, r)
			return
		}
		// conductord queues the chunk; the interrupt comes before its
		// answer reaches conductorctl.
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var ans struct{ ID string }
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &ans), rec.Body.String())
		mu.Lock()
		queued = append(queued, ans.ID)
		posts++
		if posts == 2 {
			interrupt()
		}
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)

	var out, errOut bytes.Buffer
	err := Run(ctx, []string{"--server", srv.URL, "--token", "tok", "submit", "-f", jsonlFile(t, 5000), "--chunk", "1000", "squares"}, &out, &errOut)
	require.Error(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, queued, 2, "nothing sent after the interrupt")
	require.Equal(t, strings.Join(queued, "\n")+"\n", out.String(), "every batch conductord queued is printed, so that it can be aborted")
	require.ErrorContains(t, err, "interrupted")
	require.ErrorContains(t, err, "queued 2000 of 5000 jobs (every line of")
	require.ErrorContains(t, err, "before line 2001, in the batches printed)")
}

// TestReview17b_SubmitFileFromPipe: submit -f <(cmd), -f /dev/stdin and a
// named pipe failed with "seek …: illegal seek" (the file is read twice);
// such a file is now copied first, as stdin is.
func TestReview17b_SubmitFileFromPipe(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	fifo := filepath.Join(t.TempDir(), "jobs.fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	wrote := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString("1\n2\n3\n")
			f.Close()
		}
		wrote <- err
	}()
	code, out, errOut := runStdin(t, b.srv.URL, "", "submit", "-f", fifo, "fifo")
	require.NoError(t, <-wrote)
	require.Equal(t, ExitOK, code, errOut)
	require.Len(t, strings.Fields(out), 1)
	require.Contains(t, errOut, "queued 3 jobs of fifo in 1 batch(es)")
	require.Equal(t, 3, b.queued(t, "fifo"))

	// A bad line in a pipe is found before anything is queued, as in a file.
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteString("1\n{\n")
			f.Close()
		}
		wrote <- err
	}()
	code, _, errOut = runStdin(t, b.srv.URL, "", "submit", "-f", fifo, "fifo")
	require.NoError(t, <-wrote)
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, fifo+" line 2: not one JSON value")
	require.Equal(t, 3, b.queued(t, "fifo"))
}

// TestReview17b_SubmitFileBOM: a file saved with a UTF-8 byte-order mark
// (Windows editors, PowerShell's Out-File) was refused at line 1 with
// "invalid character 'ï'"; the mark is now skipped.
func TestReview17b_SubmitFileBOM(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	code, _, errOut := runStdin(t, b.srv.URL, "", "submit", "-f", writeFile(t, "\ufeff1\r\n2\r\n"), "bom")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, errOut, "queued 2 jobs of bom")
	require.Equal(t, 2, b.queued(t, "bom"))
	// Only at the start of the file.
	code, _, errOut = runStdin(t, b.srv.URL, "", "submit", "-f", writeFile(t, "1\n\ufeff2\n"), "bom")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "line 2: not one JSON value")
}

// TestReview17b_JobsBadFlagsAreUsageErrors: docs/cli.md promises exit 2,
// and nothing sent, for a bad flag value; jobs sent --limit 5000,
// --status bogus and --before yesterday to conductord and exited 1 with
// its 400, so a script could not tell its own mistake from a failure.
func TestReview17b_JobsBadFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"jobs", "--limit", "5000"}, `--limit: want 1 to 1000 jobs, not "5000"`},
		{[]string{"jobs", "--limit", "0"}, `--limit: want 1 to 1000 jobs, not "0"`},
		{[]string{"jobs", "--limit", "ten"}, `--limit: want 1 to 1000 jobs, not "ten"`},
		{[]string{"jobs", "--status", "queued,bogus"}, `--status: unknown status "bogus": want queued, held, running, succeeded, failed, dead or cancelled`},
		{[]string{"jobs", "--before", "yesterday"}, `--before: want an RFC 3339 time (the UPDATED_AT of the last job listed), not "yesterday"`},
	} {
		code, _, errOut := runStdin(t, b.srv.URL, "", tc.args...)
		require.Equal(t, ExitUsage, code, "%v: %s", tc.args, errOut)
		require.Contains(t, errOut, tc.msg, "%v", tc.args)
	}
	for _, args := range [][]string{
		{"jobs", "--limit", "1000", "--status", "queued,dead"},
		{"jobs", "--before", "2026-12-05T03:44:38.092009458Z"},
	} {
		code, _, errOut := runStdin(t, b.srv.URL, "", args...)
		require.Equal(t, ExitOK, code, "%v: %s", args, errOut)
	}
}

// TestReview17b_HealthSizesHumanised: health printed every size in MiB
// ("free 77018.4 MiB (reserve 1024.0 MiB …)", "8446.7 MiB"), where
// docs/cli.md says sizes are in KiB/MiB/GiB as the tables print them.
func TestReview17b_HealthSizesHumanised(t *testing.T) {
	t.Parallel()
	// conductord's storage on disk, as it runs: its health has sizes.
	c, err := conductor.New(conductor.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Token: "tok",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	code, out, errOut := runStdin(t, srv.URL, "", "health")
	require.Equal(t, ExitOK, code, errOut)
	sizes := regexp.MustCompile(`(\d+)\.\d (B|KiB|MiB|GiB|TiB)`).FindAllStringSubmatch(out, -1)
	require.NotEmpty(t, sizes, out)
	for _, m := range sizes {
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		require.Less(t, n, 1024, "%s: in the next unit up: %s", m[0], out)
	}
}

// TestReview17b_CompletePoolsAndHosts: `conductorctl logs <TAB>` (and
// every pool command's) offered file names; it now offers the pools
// conductord knows, and --host the live hosts; nothing (not files) when
// conductord does not answer.
func TestReview17b_CompletePoolsAndHosts(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "logs", ""}, "squares\n:4\n"},
		{[]string{"__complete", "drain", "sq"}, "squares\n:4\n"},
		{[]string{"__complete", "resize", "squares", ""}, ":4\n"},
		{[]string{"__complete", "logs", "squares", "--host", ""}, "h1\n:4\n"},
	} {
		out, err := b.run(tc.args...)
		require.NoError(t, err)
		require.Equal(t, tc.want, out, "%v", tc.args)
	}
	var out, errOut bytes.Buffer
	require.NoError(t, Run(context.Background(), []string{"--server", "127.0.0.1:1", "__complete", "logs", ""}, &out, &errOut))
	require.Equal(t, ":4\n", out.String())
}

// TestReview17b_SubmitFileBatchIDsAsQueued: submit -f printed its batch
// ids only when every chunk was queued, so a run killed part way (a
// second Ctrl-C, SIGKILL, a lost terminal) left no id of the batches it
// had queued. Each id is now printed as soon as its batch is queued.
func TestReview17b_SubmitFileBatchIDsAsQueued(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	out := make(chanWriter, 10)
	var mu sync.Mutex
	var ids []string
	var seenAtSecond []string // what stdout had when the second chunk came
	posts := 0
	h := b.srv.Config.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/batches/") {
			mu.Lock()
			if posts++; posts == 2 {
				for len(out) > 0 {
					seenAtSecond = append(seenAtSecond, <-out)
				}
			}
			mu.Unlock()
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if r.Method == http.MethodPost {
			var ans struct{ ID string }
			if json.Unmarshal(rec.Body.Bytes(), &ans) == nil && ans.ID != "" {
				mu.Lock()
				ids = append(ids, ans.ID)
				mu.Unlock()
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	var errOut bytes.Buffer
	require.NoError(t, Run(context.Background(), []string{"--server", srv.URL, "--token", "tok", "submit", "-f", jsonlFile(t, 3), "--chunk", "2", "live"}, out, &errOut))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, ids, 2)
	require.Equal(t, []string{ids[0] + "\n"}, seenAtSecond, "the first batch's id printed before the second is sent")
	require.Equal(t, ids[1]+"\n", out.next(t))
}

// stuckServer is a TCP listener that takes connections and never answers:
// a conductord that is wedged, or a wrong port that swallows requests.
func stuckServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns sync.WaitGroup
	held := make(chan net.Conn, 16)
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
		close(held)
		for c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestReview17b_StuckServerTimesOut: against a conductord that takes the
// connection and never answers, every command hung for ever (the HTTP
// client had no time limit): a cron job or a script piling up. A call now
// gives up when no answer has come within --request-timeout (60s by
// default; submit --wait adds its wait), exit 1, naming the flag.
func TestReview17b_StuckServerTimesOut(t *testing.T) {
	t.Parallel()
	addr := stuckServer(t)
	for _, args := range [][]string{
		{"pools"},
		{"submit", "squares", "7"},
		{"submit", "--wait=100ms", "squares", "7"},
		{"logs", "squares"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var out, errOut bytes.Buffer
		err := Run(ctx, append([]string{"--server", addr, "--request-timeout", "200ms"}, args...), &out, &errOut)
		require.NoError(t, ctx.Err(), "%v: gave up by itself", args)
		cancel()
		require.Error(t, err, "%v", args)
		require.ErrorContains(t, err, "conductord at http://"+addr+" did not answer within", "%v", args)
		require.ErrorContains(t, err, "(--request-timeout)", "%v", args)
	}
	var out, errOut bytes.Buffer
	err := Run(context.Background(), []string{"--server", addr, "--request-timeout", "200ms", "version"}, &out, &errOut)
	require.NoError(t, err, "version: conductord not answering is not an error")
	require.Contains(t, out.String(), "did not answer within")
	err = Run(context.Background(), []string{"--request-timeout", "-1s", "pools"}, &out, &errOut)
	var usage *UsageError
	require.ErrorAs(t, err, &usage)
}

// TestReview17b_SubmitFileDirectory: submit -f DIR said "read DIR: write
// /tmp/conductorctl-submit-….jsonl: copy_file_range: is a directory",
// naming a temporary file the operator never made.
func TestReview17b_SubmitFileDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, _, errOut := runStdin(t, "127.0.0.1:1", "", "submit", "-f", dir, "squares")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "conductorctl: "+dir+" is a directory, not a file of jobs")
	require.NotContains(t, errOut, "conductorctl-submit-")
}

// TestReview17b_LogsTailOverLimit: logs --tail 100000 was sent and came
// back as conductord's 400, exit 1; like --tail -1, it is a usage error
// (exit 2, nothing sent): at most 1000 lines a host (client.MaxLogTail).
func TestReview17b_LogsTailOverLimit(t *testing.T) {
	t.Parallel()
	code, _, errOut := runStdin(t, "127.0.0.1:1", "", "logs", "squares", "--tail", "100000")
	require.Equal(t, ExitUsage, code, errOut)
	require.Contains(t, errOut, "--tail: want 0 to 1000 lines, not 100000")
	code, _, errOut = runStdin(t, "127.0.0.1:1", "", "logs", "squares", "--tail", "-1")
	require.Equal(t, ExitUsage, code, errOut)
	require.Contains(t, errOut, "--tail: want 0 to 1000 lines, not -1")
}

// TestReview17b_HelpUnknownTopic: `conductorctl help nosuch` printed the
// root's help and exited 0, saying nothing of the typo; it is now a usage
// error (exit 2) with a did-you-mean, as `conductorctl nosuch` is.
func TestReview17b_HelpUnknownTopic(t *testing.T) {
	t.Parallel()
	code, out, errOut := runStdin(t, "127.0.0.1:1", "", "help", "poolz")
	require.Equal(t, ExitUsage, code, errOut)
	require.Contains(t, errOut, `unknown help topic "poolz"; did you mean pools?`)
	require.Empty(t, out)
	code, _, errOut = runStdin(t, "127.0.0.1:1", "", "help", "lookup", "nosuch")
	require.Equal(t, ExitUsage, code, errOut)
	require.Contains(t, errOut, `unknown help topic "lookup nosuch"`)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help"}, "conductorctl drives a conductor"},
		{[]string{"help", "pools"}, "conductorctl pools [flags]"},
		{[]string{"help", "lookup", "get"}, "conductorctl lookup get"},
	} {
		code, out, errOut := runStdin(t, "127.0.0.1:1", "", tc.args...)
		require.Equal(t, ExitOK, code, "%v: %s", tc.args, errOut)
		require.Contains(t, out, tc.want, "%v", tc.args)
	}
}

// TestReview17b_SubmitWaitInterrupted: Ctrl-C during submit --wait left a
// queued job whose id was never shown ("conductorctl: interrupt signal
// received"), so it could not be cancelled. The job is now submitted
// with an idempotency key; an interrupt asks once more, without the wait
// and with the same key (one job, not two), and prints its id.
func TestReview17b_SubmitWaitInterrupted(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	h := b.srv.Config.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Query().Get("wait") != "" {
			// The job is queued and waited for: then the interrupt.
			h.ServeHTTP(w, r.WithContext(ctxAfter(r.Context(), interrupt)))
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	var out, errOut bytes.Buffer
	err := Run(ctx, []string{"--server", srv.URL, "--token", "tok", "submit", "--wait=30s", "nopool", "1"}, &out, &errOut)
	require.Error(t, err)
	var job struct{ ID string }
	require.NoError(t, json.Unmarshal(out.Bytes(), &job), "the job's id on stdout: %q", out.String())
	require.NotEmpty(t, job.ID)
	require.ErrorContains(t, err, "interrupted while waiting: job "+job.ID+" was queued, not waited for")
	require.ErrorContains(t, err, "conductorctl cancel "+job.ID)
	var jobs []struct{ ID string }
	o, err := runLive(t, b, "-o", "json", "jobs", "--type", "nopool")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(o), &jobs))
	require.Len(t, jobs, 1, "one job, not two")
	require.Equal(t, job.ID, jobs[0].ID)
}

// ctxAfter returns a context like parent that calls fn when its Done is
// first asked for: when conductord starts waiting on it.
func ctxAfter(parent context.Context, fn func()) context.Context {
	return &onDone{Context: parent, fn: fn}
}

type onDone struct {
	context.Context
	once sync.Once
	fn   func()
}

func (c *onDone) Done() <-chan struct{} {
	c.once.Do(c.fn)
	return c.Context.Done()
}

// TestReview17b_SubmitWaitOverLimit: --wait=1h was sent and came back as
// conductord's 400 (at most 10m), exit 1; it is a bad flag value, exit 2.
func TestReview17b_SubmitWaitOverLimit(t *testing.T) {
	t.Parallel()
	code, _, errOut := runStdin(t, "127.0.0.1:1", "", "submit", "--wait=1h", "squares", "7")
	require.Equal(t, ExitUsage, code, errOut)
	require.Contains(t, errOut, `want a duration such as 30s, at most 10m0s, got "1h"`)
}

// TestReview17b_CompletionUnknownShell: `conductorctl completion ksh`
// printed completion's help on stdout and exited 0, so that
// `conductorctl completion ksh > file` wrote the help as a script; an
// unknown shell, or none, is a usage error (exit 2).
func TestReview17b_CompletionUnknownShell(t *testing.T) {
	t.Parallel()
	code, out, errOut := runStdin(t, "127.0.0.1:1", "", "completion", "ksh")
	require.Equal(t, ExitUsage, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, `unknown shell "ksh": want bash, zsh, fish or powershell`)
	code, out, errOut = runStdin(t, "127.0.0.1:1", "", "completion")
	require.Equal(t, ExitUsage, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, "usage: conductorctl completion bash|zsh|fish|powershell")
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		code, out, errOut = runStdin(t, "127.0.0.1:1", "", "completion", sh)
		require.Equal(t, ExitOK, code, errOut)
		require.Contains(t, out, "conductorctl", sh)
	}
	code, out, _ = runStdin(t, "127.0.0.1:1", "", "completion", "--help")
	require.Equal(t, ExitOK, code)
	require.Contains(t, out, "conductorctl completion [command]")
}

// TestReview17b_TopSurvivesOutage: top on a terminal ended (exit 1) at
// the first poll conductord did not answer, so that a restart of
// conductord closed every operator's live view. It now says so in the
// frame and goes on polling; the first poll failing still ends it, as
// --once and a pipe do at any failure.
func TestReview17b_TopSurvivesOutage(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	var down atomic.Bool
	h := b.srv.Config.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			panic(http.ErrAbortHandler) // the connection dropped, no answer
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	frames := make(chanWriter, 1000)
	c, err := newClient(clientConfig{server: srv.URL, token: "tok", out: frames, log: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- c.top(ctx, topView{interval: 20 * time.Millisecond, stdin: strings.NewReader("")})
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case f := <-frames:
			return f
		case err := <-done:
			t.Fatalf("top ended (%v) while waiting for %s", err, what)
		case <-time.After(10 * time.Second):
			t.Fatalf("no frame within 10s: %s", what)
		}
		return ""
	}
	require.Contains(t, next("the first frame"), "hosts: 0 live")
	down.Store(true)
	for f := next("an outage frame"); !strings.Contains(f, "conductord does not answer"); f = next("an outage frame") {
	}
	down.Store(false)
	for f := next("a frame after the outage"); !strings.Contains(f, "hosts: 0 live"); f = next("a frame after the outage") {
	}
	cancel()
	require.NoError(t, <-done)

	// The first poll failing ends it.
	down.Store(true)
	err = c.top(context.Background(), topView{interval: 20 * time.Millisecond, stdin: strings.NewReader("")})
	require.Error(t, err)
}

// TestReview17b_SourcesNamed: a stale CONDUCTOR_TOKEN in the environment
// was refused as "a token was given but conductord refused it", which
// does not say which token (the operator had not typed one); and a bad
// CONDUCTOR_SERVER was blamed on --server, never given. The messages now
// name where the value came from. (Not parallel: it sets the environment.)
func TestReview17b_SourcesNamed(t *testing.T) {
	b := setupLive(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("stale\n"), 0o600))
	run := func(args ...string) (int, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := Main(context.Background(), args, &out, &errOut)
		return code, errOut.String()
	}
	t.Setenv("CONDUCTOR_SERVER", "ftp://x")
	t.Setenv("CONDUCTOR_TOKEN", "stale")
	code, errOut := run("pools")
	require.Equal(t, ExitUsage, code, errOut)
	require.Contains(t, errOut, `CONDUCTOR_SERVER "ftp://x": want http://HOST:PORT, https://HOST:PORT or HOST:PORT`)
	code, errOut = run("--server", "ftp://y", "pools")
	require.Equal(t, ExitUsage, code, errOut)
	require.Contains(t, errOut, `--server "ftp://y": want`)

	t.Setenv("CONDUCTOR_SERVER", b.srv.URL)
	for _, tc := range []struct {
		args []string
		from string
	}{
		{[]string{"pools"}, "conductord refused the token of CONDUCTOR_TOKEN;"},
		{[]string{"--token", "wrong", "pools"}, "conductord refused the token of --token;"},
		{[]string{"--token-file", tokenFile, "pools"}, "conductord refused the token of --token-file " + tokenFile + ";"},
	} {
		code, errOut = run(tc.args...)
		require.Equal(t, ExitFailure, code, errOut)
		require.Contains(t, errOut, "(401 Unauthorized): "+tc.from+" give conductord's token with --token-file FILE, CONDUCTOR_TOKEN or --token", "%v", tc.args)
	}
}

// TestReview17b_SubmitBadPriority: --priority urgent was sent and came
// back as conductord's 400, exit 1 (with -f, after the whole file was
// read and checked); it is a bad flag value, exit 2, nothing sent.
func TestReview17b_SubmitBadPriority(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"submit", "--priority", "urgent", "squares", "1"},
		{"submit", "-f", writeFile(t, "1\n"), "--priority", "urgent", "squares"},
	} {
		code, _, errOut := runStdin(t, "127.0.0.1:1", "", args...)
		require.Equal(t, ExitUsage, code, "%v: %s", args, errOut)
		require.Contains(t, errOut, `--priority: want high, normal or low, not "urgent"`)
	}
}

// TestReview17b_TopJSON: `conductorctl -o json top --once` printed the
// table, so `| jq` failed on it, where -o json is promised on every read
// command. It now prints the frame as one JSON object: the hosts, each
// pool with its rates, the latest dead jobs.
func TestReview17b_TopJSON(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)
	_, err := b.run("submit", "--wait=30s", "squares", `"fail"`)
	require.Error(t, err)
	// conductord counts the ends as they come from the ends stream.
	require.Eventually(t, func() bool {
		var pools []struct{ Dead int }
		out, err := b.run("-o", "json", "pools")
		return err == nil && json.Unmarshal([]byte(out), &pools) == nil && len(pools) == 1 && pools[0].Dead == 1
	}, 10*time.Second, 20*time.Millisecond, "the end counted")
	out, err := b.run("-o", "json", "top", "--interval", "20ms")
	require.NoError(t, err)
	var frame struct {
		At       time.Time
		Interval string
		Hosts    struct{ Live, Leaving int }
		Pools    []struct {
			Type, State                    string
			Queued, Running, Workers, Dead int
			OKPerSecond                    float64 `json:"ok_per_second"`
			FailedPerSecond                float64 `json:"failed_per_second"`
		}
		Dead []struct{ ID, Type, Error string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &frame), out)
	require.WithinDuration(t, time.Now(), frame.At, time.Minute)
	require.Equal(t, "20ms", frame.Interval)
	require.Equal(t, 1, frame.Hosts.Live)
	require.Len(t, frame.Pools, 1)
	require.Equal(t, "squares", frame.Pools[0].Type)
	require.Equal(t, "running", frame.Pools[0].State)
	require.Equal(t, 2, frame.Pools[0].Workers)
	require.Equal(t, 1, frame.Pools[0].Dead)
	require.Len(t, frame.Dead, 1)
	require.Contains(t, frame.Dead[0].Error, "boom: told to fail")
}
