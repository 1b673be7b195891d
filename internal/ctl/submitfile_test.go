package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runStdin runs conductorctl with stdin and returns its exit code,
// stdout and stderr, as Main would.
func runStdin(t *testing.T, url string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd, err := execute(context.Background(), append([]string{"--server", url, "--token", "tok"}, args...),
		strings.NewReader(stdin), &out, &errOut)
	code := ExitOK
	if err != nil {
		var exit *ExitError
		var usage *UsageError
		switch {
		case errors.As(err, &usage):
			code = ExitUsage
		case errors.As(err, &exit):
			code = exit.Code
		default:
			code = ExitFailure
		}
		fmt.Fprintf(&errOut, "conductorctl: %v (%s)\n", err, cmd.Name())
	}
	return code, out.String(), errOut.String()
}

// queued returns the jobs queued of type typ, as GET /v1/pools counts them.
func (b *liveBundle) queued(t *testing.T, typ string) int {
	t.Helper()
	out, err := runLive(t, b, "-o", "json", "pools")
	require.NoError(t, err)
	var pools []struct {
		Type   string
		Queued int
	}
	require.NoError(t, json.Unmarshal([]byte(out), &pools))
	for _, p := range pools {
		if p.Type == typ {
			return p.Queued
		}
	}
	return 0
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jobs.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestSubmitFile(t *testing.T) {
	t.Parallel()
	b := setupLive(t)

	// Ten jobs (and a blank line, skipped) in batches of 3.
	path := writeFile(t, "1\n2\n3\n\n4\n5\n{\"n\":6}\n7\n8\n9\n\"ten\"")
	code, out, errOut := runStdin(t, b.srv.URL, "", "submit", "-f", path, "--chunk", "3", "squares")
	require.Equal(t, ExitOK, code, errOut)
	ids := strings.Fields(out)
	require.Len(t, ids, 4, "one batch id a line: %q", out)
	require.Regexp(t, `conductorctl: queued 10 jobs of squares in 4 batch\(es\) in \S+ \(\d+ jobs/s\)`, errOut)
	require.Equal(t, 10, b.queued(t, "squares"))
	out, err := runLive(t, b, "abort", ids[3])
	require.NoError(t, err, "the ids are batches to abort")
	require.Contains(t, out, `"cancelled": 1`)

	// stdin, -o json: the summary as JSON; --quiet: nothing on stderr.
	code, out, errOut = runStdin(t, b.srv.URL, "1\n2\n3\n4\n5\n", "-o", "json", "submit", "--quiet", "-f", "-", "cubes")
	require.Equal(t, ExitOK, code, errOut)
	require.Empty(t, errOut)
	var res fileResult
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Equal(t, "cubes", res.Type)
	require.Equal(t, 5, res.Jobs)
	require.Len(t, res.Batches, 1)
	require.Equal(t, 5, b.queued(t, "cubes"))
}

// A bad line anywhere queues nothing, not even the lines before it.
func TestSubmitFile_BadLineQueuesNothing(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	for _, tc := range []struct {
		name, content, want string
	}{
		{"not json", "1\n2\n{\"a\":\n4\n", `line 3: not one JSON value (unexpected end of JSON input): "{\"a\":"; nothing was queued`},
		{"two values", "1\n2 3\n", `line 2: not one JSON value (invalid character '3' after top-level value)`},
		{"too long", "1\n\"" + strings.Repeat("x", maxFilePayload+10) + "\"\n", "line 2: over the limit of 1048576 bytes a job; nothing was queued"},
		{"late", strings.Repeat("1\n", 2500) + "nope\n", "line 2501: not one JSON value"},
	} {
		path := writeFile(t, tc.content)
		code, out, errOut := runStdin(t, b.srv.URL, "", "submit", "-f", path, "--chunk", "2", "bad")
		require.Equal(t, ExitFailure, code, tc.name)
		require.Empty(t, out, tc.name)
		require.Contains(t, errOut, tc.want, tc.name)
		require.Equal(t, 0, b.queued(t, "bad"), tc.name)
	}
	// stdin too: it is kept in a temporary file and checked whole first.
	code, _, errOut := runStdin(t, b.srv.URL, "1\n2\nthree\n", "submit", "-f", "-", "bad")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut, "stdin line 3: not one JSON value")
	require.Equal(t, 0, b.queued(t, "bad"))
	out, err := runLive(t, b, "-o", "json", "jobs", "--type", "bad")
	require.NoError(t, err)
	require.Equal(t, "[]\n", out)
}

// A chunk that fails mid-way says how many lines were queued, and prints
// the batches that were; a chunk answered 503 is sent once more with the
// same idempotency key.
func TestSubmitFile_FailsMidway(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies, keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, "application/x-ndjson", r.Header.Get("Content-Type"))
		require.Equal(t, "priority=high", r.URL.RawQuery)
		bodies, keys = append(bodies, string(body)), append(keys, r.Header.Get("Idempotency-Key"))
		switch len(bodies) {
		case 2:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"1 batches being read at once"}`)
		case 4:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"storage full: new jobs are refused"}`)
		case 5:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"storage full: new jobs are refused"}`)
		default:
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"id":"b%d","total":2}`, len(bodies))
		}
	}))
	t.Cleanup(srv.Close)
	path := writeFile(t, "1\n2\n3\n4\n\n5\n6\n7\n")
	start := time.Now()
	code, out, errOut := runStdin(t, srv.URL, "", "submit", "-f", path, "--chunk", "2", "--priority", "high", "squares")
	require.GreaterOrEqual(t, time.Since(start), time.Second, "Retry-After: 1 waited for")
	require.Equal(t, ExitFailure, code)
	require.Equal(t, "b1\nb3\n", out)
	require.Contains(t, errOut, "queued 4 of 7 jobs (every line of "+path+" before line 6, in the batches printed); "+
		"the batch of lines 6 on failed: POST /v1/batches/squares?priority=high: storage full: new jobs are refused (503 Service Unavailable)")
	require.Equal(t, []string{"1\n2\n", "3\n4\n", "3\n4\n", "5\n6\n", "5\n6\n"}, bodies)
	require.Equal(t, keys[1], keys[2], "sent again with the same key")
	require.NotEqual(t, keys[0], keys[1])
}
